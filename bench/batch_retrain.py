"""The batch baseline of bench/loop.py: retrain from scratch, in one batch, on the feedback an online
learner version was trained on. Runs as the online learner runs (two torchrun ranks, one OpenMP thread
each: `trimtab.app.demo.processes.torchrun_command`), with its code and its config:

    setup   the default model (model.path) with the online learner's LoRA shape, its constant-rate optimiser
    data    the run's archived feedback topic through `LearnerMemory.admit` / `ItemFactory` (the online
            learner's rules: vote chains, abuse weights, guardrail filter, feedback mix), kept when the
            online version's lineage trained it; plus the anchor set
    train   one round (`plan_round` with nothing to replay, `train_round`): every item
            `learner.online.round.epochs` times, importance-weighted against the default model
    publish into a scratch registry (a LoRA adapter on the imported default model), no gates

    python -m torch.distributed.run --standalone --nproc_per_node 2 -m bench.batch_retrain \\
        RUN_DIR FEEDBACK_IDS.json REGISTRY_DIR OUT.json         # with TRIMTAB_CONFIG=RUN_DIR/config.yaml
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from transformers import AutoTokenizer

from learner.checkpoint import TrainingState
from learner.distributed import init_distributed, shutdown
from learner.models import load_trainable
from learner.offline import pad_token_id
from learner.online.items import Item, ItemFactory, anchor_items
from learner.online.memory import LearnerMemory
from learner.online.rounds import Replay, plan_round
from learner.online.training import by_head, online_lora, online_optimizer, train_round
from learner.publish import Contents, VersionRecord, exported, publish
from learner.runtime import device_and_dtype, seed_everything
from trimtab.app.demo.archive import FEEDBACK_ARCHIVE, read_feedback
from trimtab.config import TrimtabConfig, load_config
from trimtab.registry import FEEDBACK_IDS, Registry
from trimtab.suite import load_suite

ROUND_SEED = 1  # the online learner seeds round n with n: this is its first and only round


def batch_items(config: TrimtabConfig, run_dir: Path, feedback_ids: set[str]) -> list[Item]:
    """The items the online learner would build from the run's feedback, those in `feedback_ids`."""
    online = config.learner.online
    memory = LearnerMemory()
    factory = ItemFactory(online.mix, config.guardrails.feedback_filter, memory.skipped)
    for event in read_feedback(run_dir / FEEDBACK_ARCHIVE):
        memory.admit(event, factory)
    return [item for item in memory.pending.items if item.feedback_id in feedback_ids]


def retrain(config: TrimtabConfig, run_dir: Path, feedback_ids: set[str], registry_root: Path) -> dict[str, object]:
    """Train and publish the batch version (rank 0 returns its id and counts; other ranks {})."""
    learner, online = config.learner, config.learner.online
    context = init_distributed(learner)
    try:
        _, dtype = device_and_dtype(learner)
        seed_everything(learner.train.seed)
        lora = online_lora(learner)
        tokenizer = AutoTokenizer.from_pretrained(config.model.path)
        pad_id = pad_token_id(tokenizer)
        model = load_trainable(
            config.model.path, reward_model=False, lora=lora, context=context, dtype=dtype, pad_token_id=pad_id
        )
        state = TrainingState(model, *online_optimizer(model, learner, online.lr))
        items = batch_items(config, run_dir, feedback_ids)
        anchors = anchor_items(load_suite(config).anchors[: online.round.anchor_examples])
        plan = plan_round(items, Replay(capacity=0), anchors, online.round, seed=ROUND_SEED)
        policy_items, _ = by_head(plan.by_algorithm)  # the policy's gain is compared, not the RM's
        metrics = train_round(
            state,
            policy_items,
            tokenizer=tokenizer,
            learner=learner,
            context=context,
            pad_token_id=pad_id,
            on_step=lambda step, examples, metrics: None,
            seed=ROUND_SEED,
        )
        ids = json.dumps(sorted(item.feedback_id for item in items))
        with exported(model, Contents(tokenizer, lora, reward_model=False, files={FEEDBACK_IDS: ids}), context) as out:
            if out is None:
                return {}
            registry = Registry(registry_root)
            default = registry.import_once(config.model.path).id
            record = VersionRecord(
                parent=default,
                base=default if lora.enabled else None,
                algorithm="batch",
                config={"learner": learner.model_dump(mode="json")},
                data_source=str(run_dir / FEEDBACK_ARCHIVE),
                event_counts={name: len(group) for name, group in plan.by_algorithm.items()},
                metrics=metrics,
            )
            version = publish(registry, out, record)
        return {"version": version, "items": len(items), "examples": plan.size}
    finally:
        shutdown(context)


def main() -> int:
    run_dir, ids_file, registry_root, out_file = (Path(arg) for arg in sys.argv[1:5])
    result = retrain(load_config(), run_dir, set(json.loads(ids_file.read_text())), registry_root)
    if result:
        out_file.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
