"""`trimtab versions ...`: the registry from the command line (operators and scripts).

Pointer changes here are the same Redis operations AdminService makes; every serving replica follows
them. Promoting or canarying checks the version's files first; serving checks that the weights fit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from trimtab.config import TrimtabConfig
from trimtab.records import redis_client
from trimtab.registry.pointers import Pointers, PointerStore
from trimtab.registry.store import Registry, RegistryError
from trimtab.throttled import ThrottledWarning

log = logging.getLogger(__name__)
Report = Callable[[str], None]
T = TypeVar("T")


def with_pointers(config: TrimtabConfig, action: Callable[[PointerStore], Awaitable[T]], wait_s: float = 0.0) -> T:
    """`action` on the registry's pointers. While Redis is unreachable it is tried again every second for up
    to `wait_s` (a warning every 10 s), then the connection's error is raised: a long-running process (the
    learner) rides out a Redis restart; 0 fails at once (an operator's command). Tried again, an action whose
    first try was refused at connect changes nothing twice; one whose reply was lost finds its change made
    (promote and set_canary then change nothing; the canary judge's roll-back finds its canary gone and goes
    on; an operator's rollback would be refused, but an operator's command does not wait)."""

    async def run() -> T:
        client = redis_client(config.redis)
        try:
            return await action(PointerStore(client, config.redis.key_prefix, config.registry.channel))
        finally:
            await client.aclose()

    deadline = time.monotonic() + wait_s
    unreachable = ThrottledWarning(log, 10.0)
    while True:
        try:
            return asyncio.run(run())
        except (RedisConnectionError, RedisTimeoutError) as exc:
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                raise
            unreachable.warning("Redis is unreachable (%s): waiting up to %.0f s more for it", exc, left_s)
            time.sleep(min(1.0, left_s))


def _intact(registry: Registry, version_id: str) -> None:
    problems = registry.verify(version_id)
    if problems:
        raise RegistryError(f"version {version_id} is damaged: {'; '.join(problems)}")


def list_versions(config: TrimtabConfig, report: Report) -> None:
    registry = Registry(config.registry.root)
    pointers: Pointers = with_pointers(config, lambda store: store.read())
    for manifest in registry.versions():
        role = "current" if manifest.id == pointers.current else "canary" if manifest.id == pointers.canary else ""
        metrics = " ".join(f"{k}={v:.3g}" for k, v in sorted(manifest.metrics.items()))
        parent = manifest.parent or "-"
        report(f"{manifest.id}  {manifest.kind:<4}  {manifest.algorithm:<8}  parent={parent}  {role:<7} {metrics}")


def show_version(config: TrimtabConfig, version_id: str, report: Report) -> None:
    registry = Registry(config.registry.root)
    report(json.dumps(json.loads(registry.get(version_id).model_dump_json()), indent=2))
    problems = registry.verify(version_id)
    report("files: intact" if not problems else "files: DAMAGED: " + "; ".join(problems))


def publish_version(
    config: TrimtabConfig, source: Path, parent: str | None, algorithm: str, base: str | None, report: Report
) -> None:
    manifest = Registry(config.registry.root).publish(source, parent=parent, algorithm=algorithm, base=base)
    report(f"published {manifest.id} ({manifest.kind}, {len(manifest.files)} files)")


def promote_version(config: TrimtabConfig, version_id: str, report: Report) -> None:
    _intact(Registry(config.registry.root), version_id)
    pointers = with_pointers(config, lambda store: store.promote(version_id))
    report(f"current -> {pointers.current}")


def canary_version(config: TrimtabConfig, version_id: str, share: float, report: Report) -> None:
    _intact(Registry(config.registry.root), version_id)
    pointers = with_pointers(config, lambda store: store.set_canary(version_id, share))
    report(f"canary -> {pointers.canary} for {pointers.canary_share:.0%} of users")


def rollback_version(config: TrimtabConfig, version_id: str | None, report: Report) -> None:
    """Roll back the canary (if it is the target, or no target is given and one is set), else current."""
    rolled = with_pointers(config, lambda store: store.rollback(version_id))
    if rolled.role == "canary":
        report(f"canary {rolled.version} removed")
    else:
        report(f"current {rolled.version} rolled back to {rolled.after.current}")
