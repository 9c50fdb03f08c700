"""Which version serves a user: current, or the canary for a stable share of users; and when base
requests must go through the all-zero adapter.

vLLM 0.32's CPU LoRA kernels give a request without an adapter the adapter of the last slot when it
is batched with LoRA requests (design.md; vllm#48421). The zero adapter avoids that but costs the LoRA
kernels on every request (about 2.8x slower on CPU, measured by `make bench`), so base requests run
plain while no adapter is in use, and through the zero adapter from the moment an adapter is about to
be routed until the last adapter request has finished. Plain and real-adapter requests never share a
batch: before an adapter is routed, `arm_lora` waits for plain requests to drain.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Served:
    """A servable version: the engine's base weights (adapter None) or a loaded LoRA adapter, with the
    full version the adapter was trained on (`base`)."""

    version: str
    adapter: str | None = None
    base: str | None = None


def user_bucket(user_id: str, canary: str) -> float:
    """A number in [0, 1) per user and canary: a user stays on one side for a canary's whole life.

    Salted with the canary's id so that each canary gets a fresh split. With one split for all, a small
    population's unlucky split (say, most adversarial users on the canary's side) biased every canary's
    thumbs-up rate the same way: in a demo with 10% adversarial users four better canaries in a row
    were rolled back."""
    return int.from_bytes(hashlib.sha256(f"{canary}:{user_id}".encode()).digest()[:8]) / 2**64


@dataclass
class Router:
    current: Served
    canary: Served | None = None
    canary_share: float = 0.0
    zero_adapter: str | None = None  # the all-zero adapter's name; None when the engine has no LoRA
    lora_armed: bool = False
    in_flight: Counter[str] = field(default_factory=Counter)  # "plain" / "adapter" requests running

    def servable(self) -> dict[str, Served]:
        """The versions a request may name: current and, while there is one, the canary."""
        return {served.version: served for served in (self.current, self.canary) if served is not None}

    def route(self, user_id: str, version: str | None = None) -> Served:
        """The user's side of the canary split, or the named version (one of `servable()`)."""
        chosen = self.current
        if version is not None:
            chosen = self.servable()[version]
        elif self.canary is not None and user_bucket(user_id, self.canary.version) < self.canary_share:
            chosen = self.canary
        if chosen.adapter is None and self.zero_adapter is not None and self._lora_in_use():
            return Served(chosen.version, self.zero_adapter, chosen.version)
        return chosen

    def admit(self, served: Served) -> None:
        self.in_flight["plain" if served.adapter is None else "adapter"] += 1

    def release(self, served: Served) -> None:
        self.in_flight["plain" if served.adapter is None else "adapter"] -= 1

    async def arm_lora(self, timeout_s: float) -> bool:
        """Send new base requests through the zero adapter and wait for plain ones to finish; False if
        some were still running after timeout_s."""
        self.lora_armed = True
        deadline = time.monotonic() + timeout_s
        while self.in_flight["plain"] > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.in_flight["plain"] == 0

    def _lora_in_use(self) -> bool:
        routed = {self.current.adapter, self.canary.adapter if self.canary else None} - {None}
        return self.lora_armed or bool(routed) or self.in_flight["adapter"] > 0
