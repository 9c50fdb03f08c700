"""Redis commands issued by concurrent calls in one turn of the event loop go out together: one round trip.

Each submission takes a few Redis steps in sequence (key limit, ledger lookup, the judged records,
admission, acceptance). Under load many calls reach a step in the same turn of the event loop: one
pipeline's replies wake them all at once, and a SubmitBatch's items start together. Sent as one
pipeline they share a round trip, one pass through redis-py's connection pool and one socket write
instead of one each, which is most of the service's CPU per submission. A command waits at most for
the rest of the turn it was issued in: alone, it goes out as it would have on its own.

Every command keeps its own atomicity (a Lua script still runs atomically); the pipeline is not a
MULTI transaction, and no step needs atomicity across calls. Scripts go out as EVALSHA; one that
Redis does not hold (after a restart or SCRIPT FLUSH) is loaded and run again on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

_Queued = tuple[tuple[Any, ...], asyncio.Future[Any]]


class RoundTrips:
    """Coalesces the commands of concurrent callers into pipelines on one client."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._queued: list[_Queued] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """Run one command (e.g. "HGETALL", key) with the next pipeline; its reply, parsed as the client would."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._queued:
            # call_soon runs after every callback already due in this turn: the calls woken with this
            # one reach their own commands first and join the same pipeline.
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append((command, future))
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered Lua script with the next pipeline."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await script(keys=keys, args=args)  # redis-py loads it and runs it

    def _flush(self) -> None:
        batch, self._queued = self._queued, []
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Queued]) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for command, _ in batch:
                pipe.execute_command(*command)
            replies = await pipe.execute(raise_on_error=False)
        except Exception as exc:  # no connection, or it broke: every command of the batch failed with it
            replies = [exc] * len(batch)
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
