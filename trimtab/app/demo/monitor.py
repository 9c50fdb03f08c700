"""Watching the versions while the demo runs: the registry pointers (Redis), the serving replica's hot
swaps (AdminService.GetStatus keeps the recent ones; the monitor keeps them all) and the versions'
manifest metrics (KL to the reference, when the learner records it)."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
from redis.exceptions import RedisError

from trimtab.app.demo.records import Clock, PointerChange, SwapEvent
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client
from trimtab.registry import Pointers, PointerStore, Registry, RegistryError
from trimtab.v1 import admin_pb2, admin_pb2_grpc

KL_METRIC = "kl_to_reference"  # manifest metric: KL(version || reference) in nats per sequence
STATUS_TIMEOUT_S = 5.0


class VersionMonitor:
    """Pointer changes, hot swaps and manifest metrics, polled every `poll` call."""

    def __init__(self, config: TrimtabConfig, serving_address: str, clock: Clock) -> None:
        self._config = config
        self._serving_address = serving_address
        self._clock = clock
        self._registry = Registry(config.registry.root)
        self._metrics: dict[str, dict[str, float]] = {}  # manifests are immutable: read each once
        self.pointers: Pointers | None = None
        self.changes: list[PointerChange] = []
        self.swaps: dict[tuple[str, float], SwapEvent] = {}  # by (to_version, start): the history overlaps
        self.initial_version: str | None = None  # what serving ran when the users started
        self.problem: str | None = None  # why the last poll could not read everything

    async def run(self, stop: asyncio.Event, period_s: float) -> None:
        """Poll until `stop` is set, then once more (the last swaps and pointers)."""
        client = redis_client(self._config.redis)
        store = PointerStore(client, self._config.redis.key_prefix, self._config.registry.channel)
        try:
            async with grpc.aio.insecure_channel(self._serving_address) as channel:
                admin = admin_pb2_grpc.AdminServiceStub(channel)
                while not stop.is_set():
                    await self.poll(store, admin)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=period_s)
                await self.poll(store, admin)
        finally:
            await client.aclose()

    async def poll(self, store: PointerStore, admin: admin_pb2_grpc.AdminServiceStub) -> None:
        problems = []
        try:
            self._saw_pointers(await store.read())
        except RedisError as exc:
            problems.append(f"registry pointers: {exc}")
        try:
            reply = await admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_S)
            self._saw_status(reply.status)
        except grpc.aio.AioRpcError as exc:
            problems.append(f"AdminService.GetStatus {exc.code().name}: {exc.details()}")
        self.problem = "; ".join(problems) or None

    def _saw_pointers(self, pointers: Pointers) -> None:
        if pointers != self.pointers:
            self.pointers = pointers
            self.changes.append(
                PointerChange(self._clock.now(), pointers.current, pointers.canary, pointers.canary_share)
            )

    def _saw_status(self, status: admin_pb2.ServingStatus) -> None:
        if self.initial_version is None:
            self.initial_version = status.current_version_id or None
        for swap in status.swaps:
            at_s = self._clock.since(swap.started_at.ToMicroseconds() / 1e6)
            key = (swap.to_version_id, round(at_s, 3))
            self.swaps[key] = SwapEvent(
                at_s=at_s,
                from_version=swap.from_version_id,
                to_version=swap.to_version_id,
                stall_ms=swap.stall_ms,
                ok=swap.ok,
                error=swap.error,
                pause_mode=admin_pb2.PauseMode.Name(swap.pause_mode).removeprefix("PAUSE_MODE_").lower(),
            )

    def swap_list(self) -> list[SwapEvent]:
        """Swaps since the users started, oldest first (the first load of the initial version is not one)."""
        return sorted((s for s in self.swaps.values() if s.at_s >= 0), key=lambda s: s.at_s)

    def metrics(self, version_id: str) -> dict[str, float]:
        """The version's manifest metrics ({} when its manifest cannot be read)."""
        if version_id not in self._metrics:
            try:
                self._metrics[version_id] = dict(self._registry.get(version_id).metrics)
            except RegistryError:
                return {}
        return self._metrics[version_id]

    def kl(self, version_id: str) -> float | None:
        return self.metrics(version_id).get(KL_METRIC)
