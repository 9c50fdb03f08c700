"""The models the online learner trains, its heads: the policy, and (when `learner.online.mix` trains one)
the reward model, the same backbone with a scalar head. Each has its own optimiser, trains its share of
every round (`learner.online.training.by_head`) and publishes a version per round it trained, which lists
the feedback ids of the round's new items it trained (`feedback_ids.json`). Both are saved in one
checkpoint (`TrainingState.companion`): restoring one without the other would break exactly-once training.

The reward model's versions (`reward`: never served) form their own lineage; the newest judges the
held-out reward gate once it has trained on enough feedback (`learner.online.gates`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from learner.checkpoint import TrainingState
from learner.models import load_trainable
from learner.online.items import Item
from learner.online.memory import LearnerMemory
from learner.online.run import OnlineRun
from learner.online.training import online_lora, online_optimizer, train_round, trains_reward_model
from learner.publish import Contents, VersionRecord, exported, publish
from trimtab.config.learner import LoraSettings
from trimtab.registry import FEEDBACK_IDS, Registry

POLICY_ALGORITHM = "online"  # the policy's versions
REWARD_MODEL_ALGORITHM = "online_reward_model"  # the reward model's versions

HeadName = Literal["policy", "reward_model"]  # also the `head` attribute of the learner's metrics


@dataclass(frozen=True)
class Trained:
    """A head's round: the round's new items it trained (not replay, not anchors) and its metrics."""

    new: list[Item]
    metrics: dict[str, float]
    anchor_loss_before: float = float("nan")  # the policy's: the anchor set's SFT loss before the round ...
    anchor_loss_after: float = float("nan")  # ... and after it (the anchor-regression gate's numbers)


@dataclass(frozen=True)
class Head:
    name: HeadName
    state: TrainingState  # the model, its optimiser and scheduler (no companion)
    lora: LoraSettings  # the policy's: published as an adapter when enabled; the reward model's: merged

    @property
    def is_reward_model(self) -> bool:
        return self.name == "reward_model"

    @property
    def algorithm(self) -> str:
        return REWARD_MODEL_ALGORITHM if self.is_reward_model else POLICY_ALGORITHM

    def train(
        self, run: OnlineRun, by_algorithm: dict[str, list[Item]], new: Sequence[Item], round_number: int
    ) -> Trained:
        """Train this head's items of round `round_number` (`by_algorithm`), `new` the round's new items."""
        metrics = train_round(
            self.state,
            by_algorithm,
            tokenizer=run.tokenizer,
            learner=run.config.learner,
            context=run.context,
            pad_token_id=run.pad_id,
            on_step=run.on_step,
            seed=round_number,
        )
        trained = [item for item in new if not by_algorithm.keys().isdisjoint(item.algorithms)]
        run.telemetry.trained(self.name, self.counts(trained), metrics)
        return Trained(trained, metrics)

    def counts(self, items: Sequence[Item]) -> dict[str, int]:
        """Items per algorithm of this head (a pair counts for DPO in the policy's, for RM in the reward model's)."""
        counts: dict[str, int] = {}
        for item in items:
            for algorithm in item.algorithms:
                if trains_reward_model(algorithm) == self.is_reward_model:
                    counts[algorithm] = counts.get(algorithm, 0) + 1
        return counts

    def contents(self, run: OnlineRun, trained: Trained) -> Contents:
        """The version's directory: the weights, the tokenizer, and the feedback ids of the round's new items."""
        ids = json.dumps(sorted({item.feedback_id for item in trained.new}))
        return Contents(run.tokenizer, self.lora, reward_model=self.is_reward_model, files={FEEDBACK_IDS: ids})

    def record(self, run: OnlineRun, memory: LearnerMemory, trained: Trained, *, parent: str | None) -> VersionRecord:
        """What every version of this learner records: its settings and round, the stream ranges it consumed,
        its new items per algorithm and its metrics."""
        topic = run.config.kafka.topics.feedback.name
        return VersionRecord(
            parent=parent,
            base=None,
            algorithm=self.algorithm,
            config={"learner": run.config.learner.model_dump(mode="json"), "round": memory.rounds},
            data_source=topic,
            offsets=memory.offsets(topic),
            event_counts=self.counts(trained.new),
            metrics=trained.metrics,
        )


@dataclass(frozen=True)
class Heads:
    policy: Head
    reward_model: Head | None  # None: the feedback mix trains none

    @property
    def checkpointed(self) -> TrainingState:
        """What each checkpoint saves and a restart restores: both heads, in one atomic step."""
        return replace(self.policy.state, companion=self.reward_model.state if self.reward_model else None)


def load_heads(run: OnlineRun) -> Heads:
    """The policy and, when the feedback mix trains one, the reward model (loaded first), from run.model_dir."""
    online, learner = run.online, run.config.learner
    reward_model = None
    if online.mix.trains_reward_model:
        lora = learner.lora.model_copy(update={"enabled": online.reward_model.adapter})
        reward_model = _load(run, "reward_model", lora, online.reward_model.lr)
    return Heads(_load(run, "policy", online_lora(learner), online.lr), reward_model)


def _load(run: OnlineRun, name: HeadName, lora: LoraSettings, lr: float) -> Head:
    model = load_trainable(
        run.model_dir,
        reward_model=name == "reward_model",
        lora=lora,
        context=run.context,
        dtype=run.dtype,
        pad_token_id=run.pad_id,
    )
    return Head(name, TrainingState(model, *online_optimizer(model, run.config.learner, lr)), lora)


def publish_reward_model(run: OnlineRun, head: Head, trained: Trained, memory: LearnerMemory) -> str | None:
    """Publish the reward model after its round, its parent the previous round's; its id (rank 0; None elsewhere)."""
    with exported(head.state.model, head.contents(run, trained), run.context) as out:
        if out is None:
            return None
        version = publish(
            Registry(run.config.registry.root), out, head.record(run, memory, trained, parent=memory.reward_version)
        )
    run.console.print(f"round {memory.rounds}: reward model trained on {len(trained.new)} new items -> {version}")
    return version
