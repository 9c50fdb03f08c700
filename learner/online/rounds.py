"""What one round trains on: the new items, capped per user, plus replay and the anchor set.

- Per-user cap: no user's items exceed `max_user_share` of the round's new items; the excess waits
  for a later round (it is not dropped: an accepted event is trained exactly once).
- Replay: a reservoir sample (Vitter's algorithm R) of earlier rounds' items, mixed in at
  `replay_share` so that what was learned from old feedback is rehearsed, not overwritten.
- Anchor set: fixed demonstrations trained by SFT in every round, and the anchor-regression gate's
  yardstick.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from learner.online.items import Item
from trimtab.config.online import RoundConfig


@dataclass
class Pending:
    """Items consumed and not yet trained, in arrival order."""

    items: list[Item] = field(default_factory=list)

    def drop(self, feedback_id: str) -> bool:
        """Remove the item of `feedback_id` (a vote superseded before it was trained); whether it was here."""
        kept = [item for item in self.items if item.feedback_id != feedback_id]
        dropped = len(kept) < len(self.items)
        self.items = kept
        return dropped

    def take(self, limit: int, max_user_share: float) -> list[Item]:
        """Up to `limit` items, oldest first, with no user above `max_user_share` of them (at least 1)."""
        per_user = max(1, math.floor(max_user_share * min(limit, len(self.items))))
        taken: list[Item] = []
        left: list[Item] = []
        counts: Counter[str] = Counter()
        for item in self.items:
            if len(taken) < limit and counts[item.user_id] < per_user:
                counts[item.user_id] += 1
                taken.append(item)
            else:
                left.append(item)
        self.items = left
        return taken


@dataclass
class Replay:
    """A uniform sample of every item ever trained, at most `capacity` of them."""

    capacity: int
    seed: int = 0
    items: list[Item] = field(default_factory=list)
    seen: int = 0

    def add(self, items: Sequence[Item]) -> None:
        rng = random.Random(f"{self.seed}:{self.seen}")
        for item in items:
            self.seen += 1
            if len(self.items) < self.capacity:
                self.items.append(item)
            else:
                slot = rng.randrange(self.seen)
                if slot < self.capacity:
                    self.items[slot] = item

    def sample(self, n: int, seed: int) -> list[Item]:
        return random.Random(seed).sample(self.items, min(n, len(self.items)))


@dataclass(frozen=True)
class RoundPlan:
    """A round's items by algorithm (a pair is in DPO's list and the reward model's); `new` are the ones
    consumed for it (counted as trained)."""

    new: list[Item]
    by_algorithm: dict[str, list[Item]]

    @property
    def size(self) -> int:
        return sum(len(items) for items in self.by_algorithm.values())


def plan_round(new: list[Item], replay: Replay, anchors: Sequence[Item], config: RoundConfig, seed: int) -> RoundPlan:
    """New items + replay (replay_share of the total) + anchors, grouped by the algorithm that trains them."""
    replayed = replay.sample(round(len(new) * config.replay_share / (1 - config.replay_share)), seed)
    by_algorithm: dict[str, list[Item]] = {}
    for item in [*new, *replayed, *anchors]:
        for algorithm in item.algorithms:
            by_algorithm.setdefault(algorithm, []).append(item)
    return RoundPlan(new, by_algorithm)
