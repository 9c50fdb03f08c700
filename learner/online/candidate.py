"""The policy's round and the candidate it yields: trained with the anchor set's loss measured around it,
exported, gated (`learner.online.gates`, on the exported directory), published with the gates' numbers
(passed or refused: either way the next round's parent), and handed to the canary judge.

Rank 0 alone gates and publishes; the version id reaches the other ranks by broadcast. A stop (SIGTERM,
SIGINT) while the gates run abandons the round on every rank (`Interrupted`): it is redone on restart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from torch import nn

from learner.data import Record, TrainExample, tokenize_records
from learner.distributed import broadcast
from learner.generation import Interrupted
from learner.online.canary import CanaryJudge
from learner.online.gates import GateCandidate, Gates, GateVerdict
from learner.online.heads import Head, Trained
from learner.online.items import Item, anchor_items
from learner.online.memory import LearnerMemory
from learner.online.rl import OnlineRL
from learner.online.run import OnlineRun
from learner.online.training import anchor_loss
from learner.publish import exported, publish
from trimtab.registry import Registry
from trimtab.registry.commands import with_pointers
from trimtab.v1 import events_pb2

STOPPED = "<stopped>"  # broadcast instead of a version id when rank 0 was stopped while gating


@dataclass(frozen=True)
class Anchors:
    """The suite's anchor demonstrations: trained by SFT in every round, and the anchor-regression gate's
    yardstick (their SFT loss before and after the round)."""

    items: list[Item]
    examples: list[TrainExample]

    @classmethod
    def of(cls, run: OnlineRun) -> Anchors:
        items = anchor_items(run.suite.anchors[: run.online.round.anchor_examples])
        records = [Record(item.prompt, item.responses) for item in items]
        return cls(items, tokenize_records(records, run.tokenizer, "sft", run.config.learner.train.max_length))

    def loss(self, run: OnlineRun, model: nn.Module) -> float:
        micro_batch_size = run.config.learner.train.micro_batch_size
        return anchor_loss(model, self.examples, micro_batch_size, run.context, run.pad_id)


def train_policy(
    run: OnlineRun,
    head: Head,
    by_algorithm: dict[str, list[Item]],
    new: Sequence[Item],
    anchors: Anchors,
    memory: LearnerMemory,
    rl: OnlineRL | None,
) -> Trained:
    """The round's feedback, then (with `learner.online.rl`) RL on its prompts; the anchor set's loss is
    measured before and after all of it."""
    before = anchors.loss(run, head.state.model)
    trained = head.train(run, by_algorithm, new, memory.rounds)
    if rl is not None:
        with run.telemetry.phase("rl"):
            trained = replace(trained, metrics=trained.metrics | rl.train(run, head, memory, new))
    return replace(trained, anchor_loss_before=before, anchor_loss_after=anchors.loss(run, head.state.model))


def publish_candidate(
    run: OnlineRun,
    head: Head,
    trained: Trained,
    memory: LearnerMemory,
    *,
    gates: Gates | None,  # rank 0's
    judge: CanaryJudge | None,
) -> str | None:
    """The round's version id, on every rank; Interrupted on every rank if rank 0 was stopped while gating."""
    try:
        version = _gate_and_publish(run, head, trained, memory, gates, judge)
    except Interrupted:
        version = STOPPED  # rank 0 only: the other ranks learn it from the broadcast
    version = broadcast(version)
    if version == STOPPED:
        raise Interrupted("stopped while gating the round")
    return version


def _gate_and_publish(
    run: OnlineRun, head: Head, trained: Trained, memory: LearnerMemory, gates: Gates | None, judge: CanaryJudge | None
) -> str | None:
    """Export the round's weights, gate them, publish them with the gates' numbers, hand them to the canary
    judge; the version id (rank 0; None elsewhere)."""
    with exported(head.state.model, head.contents(run, trained), run.context, phase=run.telemetry.phase) as out:
        if out is None:
            return None
        assert gates is not None, "rank 0 gates"
        registry = Registry(run.config.registry.root)
        if run.online.gates.enabled:  # minutes on a CPU: say what the wait is
            prompts = min(run.online.gates.heldout_prompts, len(run.suite.heldout))
            run.console.print(f"round {memory.rounds}: gating the candidate on {prompts} held-out prompts")
        with run.telemetry.phase("gate"):
            verdict = _gate(run, gates, registry, out, trained, memory)
        outcome = "gates_off" if not run.online.gates.enabled else "passed" if verdict.passed else "refused"
        record = head.record(run, memory, trained, parent=memory.last_version)
        record = replace(
            record,
            base=registry.import_once(run.model_dir).id if head.lora.enabled else None,
            event_counts=record.event_counts | {f"skipped_{reason}": n for reason, n in memory.skipped.items()},
            metrics=record.metrics | verdict.numbers,
            # The learner's newest reward model: it scored the gate once it was ready.
            config=record.config | {"reward_model": memory.reward_version},
        )
        with run.telemetry.phase("publish"):
            version = publish(registry, out, record)
            if run.events is not None:
                said = f"round {memory.rounds}: {len(trained.new)} new items, gates: {outcome}"
                kind = events_pb2.VERSION_EVENT_TYPE_PUBLISHED
                run.events.send(kind, version, said, verdict.numbers, parent=record.parent or "")
    run.console.print(f"round {memory.rounds}: {len(trained.new)} new items -> {version} ({_said(verdict, outcome)})")
    gate = verdict.numbers | {"gate/max_kl": run.online.gates.max_kl} if run.online.gates.enabled else {}
    run.telemetry.round_done(version, outcome, [item.accepted_at for item in trained.new], gate)
    if judge is not None:
        judge.candidate(version, verdict.passed, verdict.reasons, verdict.numbers)
    return version


def _gate(
    run: OnlineRun, gates: Gates, registry: Registry, candidate: Path, trained: Trained, memory: LearnerMemory
) -> GateVerdict:
    current = with_pointers(run.config, lambda p: p.read(), run.online.redis_wait_s).current
    inputs = GateCandidate(
        candidate_dir=candidate,
        current_dir=registry.path(current) if current else run.model_dir,
        anchor_loss_before=trained.anchor_loss_before,
        anchor_loss_after=trained.anchor_loss_after,
        reward_model_dir=_reward_judge(run, registry, memory),
    )
    return gates.judge(inputs, should_stop=run.waiting)


def _reward_judge(run: OnlineRun, registry: Registry, memory: LearnerMemory) -> Path | None:
    """The reward model the gate scores with: the newest published, once it has trained on enough."""
    version = memory.judging_reward_model(run.online.reward_model.min_examples)
    return None if version is None else registry.path(version)


def _said(verdict: GateVerdict, outcome: str) -> str:
    if outcome == "gates_off":
        return "gates off"
    said = "passed the gates" if verdict.passed else "refused: " + "; ".join(verdict.reasons)
    return said + "".join(f"; {note}" for note in verdict.notes)
