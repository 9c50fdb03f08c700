"""Which version serves a user: current, or the canary for a stable share of users."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Served:
    """A servable version: the engine's base weights (adapter None) or a loaded LoRA adapter."""

    version: str
    adapter: str | None = None


def user_bucket(user_id: str) -> float:
    """A stable number in [0, 1) per user: the same user always lands on the same side of a canary."""
    return int.from_bytes(hashlib.sha256(user_id.encode()).digest()[:8]) / 2**64


@dataclass
class Router:
    current: Served
    canary: Served | None = None
    canary_share: float = 0.0

    def route(self, user_id: str) -> Served:
        if self.canary is not None and user_bucket(user_id) < self.canary_share:
            return self.canary
        return self.current
