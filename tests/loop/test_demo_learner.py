"""The short demo with the online learner on: the session's serving process, a `trimtab feedback` and
the learner's two torchrun ranks started by the harness, simulated users for two minutes. The
learner must consume the users' feedback, train rounds, gate each candidate through vLLM and publish
it with its numbers and its feedback ids, and stop cleanly on the harness's SIGTERM.

The canary is off here: the serving process is shared with the rest of the suite, whose tests expect
its current version to stay put. Promotion and roll-back are tested on their own
(tests/learner/test_online.py); the full loop with promotions is `make demo`."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import pytest
from rich.console import Console
from transformers import AutoModelForSequenceClassification

from learner.online.heads import REWARD_MODEL_ALGORITHM
from tests.loop.demo_config import short_demo_config
from tests.serving_process import ServingProcess
from trimtab.app.demo import run_demo
from trimtab.app.demo.records import Interaction, read_jsonl
from trimtab.registry import FEEDBACK_IDS, Registry

pytestmark = pytest.mark.integration

USERS_S = 120


def test_the_online_learner_trains_gates_and_publishes_from_the_users_feedback(
    serving: ServingProcess, tmp_path: Path
) -> None:
    topic = f"trimtab.feedback.learner-demo-{uuid.uuid4().hex[:8]}"  # only this run's feedback
    config = short_demo_config(
        serving,
        tmp_path,
        TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME=topic,
        TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS="2",
        TRIMTAB_DEMO__LEARNER="true",
        TRIMTAB_DEMO__USERS__DURATION_S=str(USERS_S),
        # Not test_demo.py's seed: the users derive their feedback ids (idempotency keys) from it, and the
        # feedback service, shared through the session's Redis, would answer ALREADY_EXISTS.
        TRIMTAB_DEMO__USERS__SEED="1",
        TRIMTAB_LEARNER__ONLINE__CHECKPOINT_DIR=str(tmp_path / "learner"),
        TRIMTAB_LEARNER__ONLINE__GROUP_ID=f"learner-demo-{uuid.uuid4().hex[:8]}",
        TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES="24",
        TRIMTAB_LEARNER__ONLINE__ROUND__EPOCHS="1",
        TRIMTAB_LEARNER__ONLINE__ROUND__ANCHOR_EXAMPLES="4",
        TRIMTAB_LEARNER__ONLINE__GATES__HELDOUT_PROMPTS="8",
        # The reward gate judged as a deployment judges it: by the learner's own reward model.
        TRIMTAB_DEMO__REWARD_JUDGE="reward_model",
        TRIMTAB_LEARNER__ONLINE__REWARD_MODEL__MIN_EXAMPLES="8",
        TRIMTAB_LEARNER__ONLINE__CANARY__ENABLED="false",
    )
    result = run_demo(config, Console(file=io.StringIO(), width=240, force_terminal=False))

    rows = [Interaction.from_json(row) for row in read_jsonl(result.run_dir / "interactions.jsonl")]
    assert result.failed_requests == 0, [row.error for row in rows if row.failed][:5]
    log = (result.run_dir / "learner.log").read_text(errors="replace")
    assert result.exit_codes.get("learner") == 0, log[-3000:]  # SIGTERM: finish the round, checkpoint, exit

    registry = Registry(serving.config.registry.root)
    published = [m for m in registry.versions() if m.algorithm == "online" and m.data_source == topic]
    assert published, log[-3000:]
    accepted = {row.feedback_id for row in rows if row.accepted}
    for manifest in published:
        assert {"gate/candidate_reward", "gate/current_reward", "gate/candidate_kl"} <= set(manifest.metrics)
        trained = set(json.loads((registry.path(manifest.id) / FEEDBACK_IDS).read_text()))
        assert trained and trained <= accepted  # the users' own feedback, nothing else

    # The reward model: trained on the users' ratings and pairs, published as reward versions that
    # transformers loads as a scalar-head model, and the judge of every gate once it had trained enough.
    reward_models = [m for m in registry.versions() if m.algorithm == REWARD_MODEL_ALGORITHM and m.data_source == topic]
    assert reward_models and {m.kind for m in reward_models} == {"reward"}, log[-3000:]
    assert {"rm/loss", "rm_rating/loss"} <= set(reward_models[-1].metrics)
    assert set(json.loads((registry.path(reward_models[-1].id) / FEEDBACK_IDS).read_text())) <= accepted
    judged = [m for m in published if m.config["reward_model"] is not None]
    rm_numbers = {"gate/candidate_rm_reward", "gate/current_rm_reward", "gate/reward_model_agreement_prompts"}
    assert judged and all(rm_numbers <= set(m.metrics) for m in judged)
    scorer = AutoModelForSequenceClassification.from_pretrained(registry.path(reward_models[-1].id))
    assert scorer.config.num_labels == 1
