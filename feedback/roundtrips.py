"""Redis commands of concurrent calls, coalesced per event-loop turn and pipelined on one connection.

Each submission takes a few Redis steps in sequence (key limit, ledger lookup, the judged records,
admission, acceptance). Under load many calls reach a step in the same turn of the event loop: one
batch of replies wakes them all at once, and a SubmitBatch's items start together. Their commands go
out in one write. A command waits at most for the rest of the turn it was issued in: alone, it goes
out as it would have on its own.

The writes share one connection and do not wait for each other's replies: Redis answers a connection's
commands in order, so one reader hands each reply to its caller in the order the commands were
written. redis-py's own pipeline would take a connection from the pool for each batch and wait for
its replies, with its retry, observability and bookkeeping layers around every batch: about a fifth
of the feedback service's CPU per submission, measured (docs/measurements.md#feedback).

Every command keeps its own atomicity (a Lua script still runs atomically); nothing is a MULTI
transaction, and no step needs atomicity across calls. Scripts go out as EVALSHA; one that Redis does
not hold (after a restart or SCRIPT FLUSH) is loaded and run again. A reply is parsed as
the client parses it (its response callbacks). When the connection breaks, the commands still waiting
for a reply go out once more on a new connection, as redis-py retries a command whose connection broke
(so a command may run twice, as there: every step here is safe to repeat); a second break fails them
with the connection's error, and so does a failed connect. A connection whose replies stop for its
`socket_timeout` (redis-py's, 5 s unless the URL says otherwise) counts as broken.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(slots=True)
class _Command:
    words: tuple[Any, ...]
    future: asyncio.Future[Any]
    attempts: int = 0


@dataclass(slots=True)
class _Line:
    """One connection and the commands written on it whose replies are not read yet, in order."""

    connection: AbstractConnection
    unanswered: deque[_Command] = field(default_factory=deque)
    reading: bool = False
    broken: bool = False
    answered_at: float = 0.0  # the event loop's time of the last reply, or of the first command after none waited
    watchdog: asyncio.TimerHandle | None = None


class RoundTrips:
    """Coalesces the commands of concurrent callers into pipelined writes on one connection of `client`."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.writes = 0  # writes that went out: one per turn with commands in it (the tests count them)
        self._queued: list[_Command] = []
        self._outbox: deque[_Command] = deque()  # queued in earlier turns, not written yet
        self._line: _Line | None = None
        self._writing = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """Run one command (e.g. "HGETALL", key) with the next write; its reply, parsed as the client would."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._queued:
            # call_soon runs after every callback already due in this turn: the calls woken with this
            # one reach their own commands first and join the same write.
            asyncio.get_running_loop().call_soon(self._flush)
        self._queued.append(_Command(command, future))
        return await future

    async def script(self, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """Run a registered Lua script with the next write."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: load it, on this connection too
            await self.execute("SCRIPT", "LOAD", script.script)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    def _flush(self) -> None:
        self._outbox.extend(self._queued)
        self._queued = []
        self._start_writing()

    def _start_writing(self) -> None:
        """One writer at a time: a running one takes whatever reaches the outbox before it ends."""
        if not self._writing:
            self._writing = True
            self._spawn(self._write())

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self) -> None:
        """Write whatever is in the outbox, a write at a time, until it is empty."""
        try:
            while self._outbox:
                try:
                    line = await self._connected()
                except RedisError as error:  # no connection: everything waiting to be written fails with it
                    _fail(self._outbox, error)
                    self._outbox.clear()
                    return
                batch = [command for command in self._outbox if not command.future.done()]  # done: cancelled
                self._outbox.clear()
                packed: list[bytes] = []
                for command in batch:
                    try:
                        packed += line.connection.pack_command(*command.words)
                    except RedisError as error:  # an argument Redis cannot take fails only its command
                        command.future.set_exception(error)
                        continue
                    command.attempts += 1
                    line.unanswered.append(command)
                if not packed:
                    continue
                if not line.reading:
                    line.reading = True
                    line.answered_at = asyncio.get_running_loop().time()
                    self._spawn(self._read(line))
                self.writes += 1
                try:
                    await line.connection.send_packed_command(packed, check_health=False)
                except RedisError as error:
                    await self._break(line, error)
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            _cancel(self._outbox)
            raise
        finally:
            self._writing = False

    async def _connected(self) -> _Line:
        if self._line is None:
            self._line = _Line(await self.client.connection_pool.get_connection())
        return self._line

    async def _read(self, line: _Line) -> None:
        """Hand each reply of `line` to its command's caller, while commands wait for one."""
        loop = asyncio.get_running_loop()
        self._watch(line)
        try:
            while line.unanswered and not line.broken:
                try:
                    # No timeout of redis-py's own around each reply (math.inf: its set-up and tear-down
                    # cost more than reading a small reply); `_watch` bounds the wait for the line instead.
                    reply = await line.connection.read_response(timeout=math.inf)
                except ResponseError as error:  # the command's own error (NOSCRIPT, WRONGTYPE, ...)
                    reply = error
                except (RedisError, OSError) as error:
                    await self._break(line, error)
                    return
                line.answered_at = loop.time()
                command = line.unanswered.popleft()
                if command.future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, Exception):
                    command.future.set_exception(reply)
                else:
                    try:
                        command.future.set_result(self._parsed(command.words[0], reply))
                    except Exception as error:  # a reply the callback cannot parse fails its own caller
                        command.future.set_exception(error)
        except BaseException:  # cancelled (the loop is closing): no caller may wait forever
            _cancel(line.unanswered)
            raise
        finally:
            line.reading = False

    def _watch(self, line: _Line) -> None:
        """Break `line` if its replies stop for the connection's socket timeout while commands wait for one
        (one timer per line, not one per reply)."""
        timeout_s = line.connection.socket_timeout
        if not timeout_s or line.watchdog is not None:
            return
        loop = asyncio.get_running_loop()

        def check() -> None:
            line.watchdog = None
            if line.broken or not line.unanswered:
                return  # the next read starts a new watch
            silent_s = loop.time() - line.answered_at
            if silent_s < timeout_s:
                line.watchdog = loop.call_later(timeout_s - silent_s, check)
                return
            self._spawn(self._break(line, RedisTimeoutError(f"no reply from Redis for {timeout_s:g} s")))

        line.watchdog = loop.call_later(timeout_s, check)

    def _parsed(self, name: Any, reply: Any) -> Any:
        """As redis-py's `Redis.parse_response` does for a command sent without options."""
        callback = self.client.response_callbacks.get(name)
        return callback(reply) if callback is not None else reply

    async def _break(self, line: _Line, error: Exception) -> None:
        """The line's connection failed: its unanswered commands go out once more on a new one, or fail."""
        if line.broken:
            return
        line.broken = True
        if line.watchdog is not None:
            line.watchdog.cancel()
        if self._line is line:
            self._line = None
        again = [command for command in line.unanswered if not command.future.done()]
        line.unanswered.clear()
        _fail([command for command in again if command.attempts > 1], error)
        retry = [command for command in again if command.attempts <= 1]
        if retry:
            self._outbox.extendleft(reversed(retry))  # before later turns' commands: the order is kept
            self._start_writing()
        await line.connection.disconnect(nowait=True)
        await self.client.connection_pool.release(line.connection)


def _fail(commands: Sequence[_Command], error: Exception) -> None:
    failure = error if isinstance(error, RedisError) else RedisConnectionError(str(error))
    for command in commands:
        if not command.future.done():
            command.future.set_exception(failure)


def _cancel(commands: deque[_Command]) -> None:
    for command in commands:
        command.future.cancel()
    commands.clear()
