"""Keeping the engine and the router in step with the registry's `current` and `canary` pointers.

Full-weight versions are swapped into the engine (pause -> reload -> relabel -> resume); LoRA
versions are loaded as adapters named by their version id (ids are never reused, so neither are
adapter names) and served side by side. Every check runs before the engine is touched, so a version
that cannot apply leaves the old one serving; the refusal is logged, counted and sent as a version event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from serving.metrics import ServingMetrics
from serving.protocol import Engine, PauseMode
from serving.routing import Router, Served
from serving.weights import SwapRefused, TensorSpec, check_compatible, tensor_specs
from trimtab.registry import Manifest, Pointers, PointerStore, Registry, RegistryError
from trimtab.registry.pointers import follow

log = logging.getLogger(__name__)
ZERO_ADAPTER = "trimtab-base"  # the all-zero adapter "base" requests use while LoRA is on
ADAPTER_GRACE_S = 30.0  # a retired adapter stays loaded this long for requests still using it
ARM_TIMEOUT_S = 30.0  # how long a LoRA swap waits for plain requests to drain (vLLM CPU LoRA bug)
HISTORY = 50


@dataclass(frozen=True)
class Swap:
    """One attempt to change what serves; kept for AdminService.GetStatus and sent as a version event."""

    role: str  # "current" or "canary"
    from_version: str | None
    to_version: str
    mode: str  # pause mode for full swaps, "adapter" for LoRA loads
    stall_s: float
    ok: bool
    error: str
    started_at: datetime
    finished_at: datetime


Announce = Callable[[Swap, Manifest | None], None]
Role = Literal["all", "current", "canary"]


def wanted_versions(pointers: Pointers, role: Role, is_full: Callable[[str], bool]) -> tuple[str | None, str | None]:
    """What a replica in `role` (serving.role) should serve: its base weights and its adapter canary.

    One engine holds one set of base weights, so behind `trimtab route` a full-weight canary runs on replicas
    of its own ('canary', which serve current while there is none) and the others ('current') leave it to
    them; adapter canaries run beside current on the 'current' replicas as on 'all' ones. A replica on its
    own ('all') is given both pointers, and refuses a full-weight canary with the reason."""
    full_canary = pointers.canary is not None and is_full(pointers.canary)
    if role == "canary":
        return (pointers.canary if full_canary else pointers.current), None
    if role == "current" and full_canary:
        return pointers.current, None
    return pointers.current, pointers.canary


class VersionManager:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        pointers: PointerStore,
        initial: Manifest,
        *,
        base_specs: dict[str, TensorSpec],
        pause_mode: PauseMode,
        lora: bool,
        meters: ServingMetrics,
        announce: Announce,
        role: Role = "all",
    ) -> None:
        self._engine = engine
        self._role = role
        self._registry = registry
        self._pointers = pointers
        self._lora = lora
        self.router = Router(current=self.served(initial), zero_adapter=ZERO_ADAPTER if lora else None)
        self._base_specs = base_specs
        self._pause_mode = pause_mode
        self._meters = meters
        self._announce = announce
        self._lock = asyncio.Lock()
        self.base_version = initial.id
        self.history: list[Swap] = []
        self.refused: set[str] = set()  # not retried while a pointer still names them
        self._retirements: set[asyncio.Task[None]] = set()

    def served(self, manifest: Manifest) -> Served:
        """What the router holds for a version (base requests get the zero adapter at route time)."""
        if manifest.kind == "lora":
            return Served(manifest.id, adapter=manifest.id, base=manifest.base)
        return Served(manifest.id)

    async def reconcile(self) -> None:
        """Apply whatever the pointers say that the engine does not serve yet (idempotent)."""
        async with self._lock:
            pointers = await self._pointers.read()
            self.refused &= {pointers.current, pointers.canary}  # a refusal lasts while a pointer names it
            wanted, wanted_canary = wanted_versions(pointers, self._role, self._is_full)
            if wanted is not None and wanted != self.router.current.version and wanted not in self.refused:
                await self._apply("current", wanted)
            canary = self.router.canary.version if self.router.canary else None
            if wanted_canary != canary and wanted_canary not in self.refused:
                if wanted_canary is None:
                    self._retire(self.router.canary)
                    self.router.canary, self.router.canary_share = None, 0.0
                else:
                    await self._apply("canary", wanted_canary, pointers.canary_share)
            elif wanted_canary is not None:
                self.router.canary_share = pointers.canary_share

    def _is_full(self, version_id: str) -> bool:
        try:
            return self._registry.get(version_id).kind == "full"
        except RegistryError:
            return False  # applying it says why it cannot serve

    async def follow(self, poll_s: float) -> None:
        """Reconcile on every announced change, and every `poll_s` in case a message was missed."""
        await follow(self._pointers, self.reconcile, poll_s)

    async def _apply(self, role: str, version_id: str, share: float = 0.0) -> None:
        previous = self.router.current if role == "current" else self.router.canary
        started, clock = datetime.now(UTC), time.perf_counter()
        manifest: Manifest | None = None
        mode, stall_s = "adapter", 0.0
        try:
            manifest = self.check(version_id, role)
            if manifest.kind == "full":
                mode = self._pause_mode
                stall_s = await self._engine.swap_weights(self._registry.path(version_id), version_id, self._pause_mode)
                self.base_version = version_id
                self._drop_stale_canary()
            else:
                await self._engine.add_adapter(version_id, self._registry.path(version_id))
                if not await self.router.arm_lora(ARM_TIMEOUT_S):
                    log.warning("plain requests still running after %.0fs; routing the adapter anyway", ARM_TIMEOUT_S)
            served = self.served(manifest)
            if role == "current":
                self.router.current = served
            else:
                self.router.canary, self.router.canary_share = served, share
            if previous is not None and previous.adapter not in (None, served.adapter):
                self._retire(previous)
            error = ""
        except (SwapRefused, RegistryError) as exc:
            error = str(exc)
            self.refused.add(version_id)
            log.error("refused to serve %s as %s: %s", version_id, role, error)
        except Exception as exc:  # the engine failed mid-swap: report it; the old label stays
            error = f"engine error: {exc}"
            log.exception("swap to %s failed", version_id)
        finally:
            self.router.lora_armed = False  # from here a routed adapter keeps base requests on the zero adapter
        swap = Swap(
            role,
            previous.version if previous else None,
            version_id,
            mode,
            stall_s,
            not error,
            error,
            started,
            datetime.now(UTC),
        )
        self._record(swap, manifest, time.perf_counter() - clock)

    def check(self, version_id: str, role: str) -> Manifest:
        """The version's manifest if it can serve in `role` on this engine, else SwapRefused saying why."""
        manifest = self._registry.get(version_id)
        problems = self._registry.verify(version_id)
        if problems:
            raise SwapRefused(f"version {version_id} is damaged: {'; '.join(problems)}")
        if manifest.kind == "reward":
            raise SwapRefused(f"version {version_id} is a reward model, not a policy: it cannot serve")
        if manifest.kind == "full":
            if role == "canary" and self._role == "all":
                raise SwapRefused(
                    "a full-weight canary needs replicas of its own (one engine holds one set of base weights):"
                    " run serving.role=canary replicas behind `trimtab route` (docs/deploy.md), or publish the"
                    " canary as a LoRA adapter"
                )
            check_compatible(tensor_specs(self._registry.path(version_id)), self._base_specs)
        elif not self._lora:
            raise SwapRefused("version is a LoRA adapter but engine.lora is off")
        elif manifest.base != self.base_version:
            raise SwapRefused(f"adapter was trained on {manifest.base}, the engine serves base {self.base_version}")
        return manifest

    def _drop_stale_canary(self) -> None:
        """An adapter canary trained on the old base must not run on the new one: stop routing to it (the
        next reconcile re-checks the pointer and refuses it, with a SWAP_FAILED event saying why)."""
        canary = self.router.canary
        if canary is not None and canary.base is not None and canary.base != self.base_version:
            self._retire(canary)
            self.router.canary, self.router.canary_share = None, 0.0

    def _retire(self, served: Served | None) -> None:
        """Unload an adapter no route uses any more, after a grace period for requests still on it."""
        if served is None or served.adapter is None:
            return

        async def later(name: str) -> None:
            await asyncio.sleep(ADAPTER_GRACE_S)
            routed = {self.router.current.adapter, self.router.canary.adapter if self.router.canary else None}
            if name not in routed:
                await self._engine.remove_adapter(name)

        task = asyncio.get_running_loop().create_task(later(served.adapter))
        self._retirements.add(task)  # a task nobody references may be garbage-collected mid-sleep
        task.add_done_callback(self._retirements.discard)

    def _record(self, swap: Swap, manifest: Manifest | None, took_s: float) -> None:
        self.history = [*self.history[-(HISTORY - 1) :], swap]
        self._meters.swaps.add(1, {"ok": swap.ok, "role": swap.role, "mode": swap.mode})
        if swap.ok:
            self._meters.swap_stall.record(swap.stall_s, {"mode": swap.mode})
            log.info(
                "%s is now %s (%s, stall %.0f ms, %.0f ms in all)",
                swap.role,
                swap.to_version,
                swap.mode,
                swap.stall_s * 1000,
                took_s * 1000,
            )
        self._announce(swap, manifest)


async def initial_version(registry: Registry, pointers: PointerStore, model_path: Path) -> Manifest:
    """The full version to start the engine on: `current` if set, else model.path imported and promoted."""
    current = (await pointers.read()).current
    if current is not None:
        manifest = registry.get(current)
        return registry.get(manifest.base) if manifest.kind == "lora" and manifest.base else manifest
    # The same import the learner trains LoRA adapters on (Registry.import_once), so their bases agree.
    manifest = registry.import_once(model_path)
    await pointers.promote(manifest.id)
    return manifest
