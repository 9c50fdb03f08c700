"""Everything the online learner must remember across a restart besides the weights and optimiser: the
stream positions, the consumed-but-untrained items, the replay buffer, the lineages (the policy's and
the reward model's) and the counters.

It travels in the checkpoint's `extra` (JSON), so that weights, positions and buffers are written in one
atomic step: restarting from a checkpoint resumes exactly where it left off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from learner.online.items import Item, ItemFactory
from learner.online.raters import RaterCounts
from learner.online.rounds import Pending, Replay
from learner.online.stream import Fence
from trimtab.registry import OffsetRange
from trimtab.v1 import events_pb2


@dataclass
class LearnerMemory:
    """(See the module docstring.) `admit` is the one way a consumed event joins the pending items."""

    positions: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    range_start: dict[int, int] = field(default_factory=dict)  # positions when the last round was published
    pending: Pending = field(default_factory=Pending)
    replay: Replay = field(default_factory=lambda: Replay(capacity=0))
    rounds: int = 0
    last_version: str | None = None  # the version the learner's weights are (its lineage)
    reward_version: str | None = None  # the version the reward model's weights are (its own lineage)
    reward_trained: int = 0  # new items the reward model trained, all rounds
    trained: int = 0  # new items trained, all rounds
    rl_steps: int = 0  # RL steps taken, all rounds (`learner.online.rl`): their sampling seeds continue
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> events not trained
    superseded: set[str] = field(default_factory=set)  # feedback ids a later vote replaced
    fences: dict[int, Fence] = field(default_factory=dict)  # partitions whose log the broker lost (stream.py)
    raters: dict[str, RaterCounts] = field(default_factory=dict)  # user id -> agreement with the judge (raters.py)

    def admit(self, event: events_pb2.FeedbackEvent, factory: ItemFactory) -> None:
        """Queue the event's item, honouring vote chains: the latest vote wins. A vote whose successor
        arrives before it is trained is dropped; one superseded after training stays trained (counted)."""
        if event.supersedes:
            self.superseded.add(event.supersedes)
            found = self.pending.drop(event.supersedes)
            reason = "superseded_before_training" if found else "superseded_after_training_or_unseen"
            self.skipped[reason] = self.skipped.get(reason, 0) + 1
        if event.feedback_id in self.superseded:
            self.skipped["superseded_on_arrival"] = self.skipped.get("superseded_on_arrival", 0) + 1
            return
        item = factory.build(event)
        if isinstance(item, Item):
            self.pending.items.append(item)

    def offsets(self, topic: str) -> list[OffsetRange]:
        """What a version published now consumed of `topic`: from the last published round's positions on."""
        return [
            OffsetRange(topic=topic, partition=p, start=self.range_start.get(p, 0), end=end)
            for p, end in sorted(self.positions.items())
        ]

    def judging_reward_model(self, min_examples: int) -> str | None:
        """The newest reward-model version, once it has trained on `min_examples` new examples (rank 0's)."""
        if self.reward_version is None or self.reward_trained < min_examples:
            return None
        return self.reward_version

    def to_json(self) -> dict[str, Any]:
        return {
            "positions": {str(p): o for p, o in self.positions.items()},
            "range_start": {str(p): o for p, o in self.range_start.items()},
            "pending": [asdict(item) for item in self.pending.items],
            "replay": {
                "capacity": self.replay.capacity,
                "seed": self.replay.seed,
                "seen": self.replay.seen,
                "items": [asdict(item) for item in self.replay.items],
            },
            "rounds": self.rounds,
            "last_version": self.last_version,
            "reward_version": self.reward_version,
            "reward_trained": self.reward_trained,
            "trained": self.trained,
            "rl_steps": self.rl_steps,
            "skipped": self.skipped,
            "superseded": sorted(self.superseded),
            "fences": {str(p): asdict(fence) for p, fence in self.fences.items()},
            "raters": {user: asdict(counts) for user, counts in self.raters.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearnerMemory:
        replay = data["replay"]
        return cls(
            positions={int(p): int(o) for p, o in data["positions"].items()},
            range_start={int(p): int(o) for p, o in data["range_start"].items()},
            pending=Pending([_item(raw) for raw in data["pending"]]),
            replay=Replay(replay["capacity"], replay["seed"], [_item(raw) for raw in replay["items"]], replay["seen"]),
            rounds=data["rounds"],
            last_version=data["last_version"],
            reward_version=data["reward_version"],
            reward_trained=data["reward_trained"],
            trained=data["trained"],
            rl_steps=data.get("rl_steps", 0),  # absent in checkpoints written before online RL
            skipped=dict(data["skipped"]),
            superseded=set(data["superseded"]),
            fences={int(p): Fence(**fence) for p, fence in data.get("fences", {}).items()},  # absent before 12-05
            raters={user: RaterCounts(**counts) for user, counts in data.get("raters", {}).items()},  # before 12-05
        )


def _item(raw: dict[str, Any]) -> Item:
    logps = raw["behaviour_logps"]
    return Item(
        algorithms=tuple(raw["algorithms"]),
        prompt=[dict(message) for message in raw["prompt"]],
        responses=tuple(raw["responses"]),
        desirable=raw["desirable"],
        weight=raw["weight"],
        user_id=raw["user_id"],
        feedback_id=raw["feedback_id"],
        versions=tuple(raw["versions"]),
        behaviour_logps=None if logps is None else tuple(logps),
        target=raw["target"],
        accepted_at=raw.get("accepted_at", 0.0),  # absent in checkpoints written before it was recorded
    )
