"""Which replica set a request goes to: the canary replicas for their users' share of a full-weight canary,
the current replicas for everything else (adapter canaries included: those replicas split them
themselves, by the same hash)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from serving.routing import user_bucket
from trimtab.registry import Pointers, Registry, RegistryError

Side = Literal["current", "canary"]


@dataclass
class Split:
    canary: str | None = None  # a full-weight canary's version id, while there is one
    share: float = 0.0

    def side(self, user_id: str, pinned: str | None = None) -> Side:
        """Where a request of `user_id` goes; `pinned`, a version the request names (OpenAI `model`), goes to
        the replicas serving it."""
        if self.canary is None:
            return "current"
        if pinned is not None:
            return "canary" if pinned == self.canary else "current"
        return "canary" if user_bucket(user_id, self.canary) < self.share else "current"

    def update(self, pointers: Pointers, registry: Registry) -> None:
        """Follow the pointers: split only for a canary that is full weights (the canary replicas serve it)."""
        canary = pointers.canary
        if canary is not None and _kind(registry, canary) != "full":
            canary = None
        self.canary, self.share = canary, pointers.canary_share if canary is not None else 0.0


def _kind(registry: Registry, version_id: str) -> str | None:
    try:
        return registry.get(version_id).kind
    except RegistryError:
        return None  # not in the registry: no replica can serve it, the current ones say so when asked
