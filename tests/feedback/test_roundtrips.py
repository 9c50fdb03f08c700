"""RoundTrips: commands issued together share one write, and each caller gets its own reply or error."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import DataError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client

pytestmark = pytest.mark.integration

_ECHO = "return {KEYS[1], ARGV[1]}"


def run(stack: TrimtabConfig, scenario: Any) -> Any:
    """The scenario's result and how many writes its commands took."""

    async def wrapped() -> Any:
        client = redis_client(stack.redis)
        redis = RoundTrips(client)
        try:
            result = await scenario(redis, f"{stack.redis.key_prefix}rt-{uuid.uuid4().hex[:6]}:")
            return result, redis.writes
        finally:
            await client.aclose()

    return asyncio.run(wrapped())


def test_commands_issued_in_one_turn_go_out_as_one_write_in_order(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        return list(await asyncio.gather(*(redis.execute("INCR", f"{prefix}n") for _ in range(50))))

    replies, writes = run(stack, scenario)
    assert replies == list(range(1, 51)) and writes == 1


def test_a_command_alone_goes_out_at_once(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        return [await redis.execute("INCR", f"{prefix}n") for _ in range(3)]

    replies, writes = run(stack, scenario)
    assert replies == [1, 2, 3] and writes == 3


def test_a_failing_command_fails_only_its_caller(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        await redis.execute("HSET", f"{prefix}hash", "a", 1)
        calls = [redis.execute("INCR", f"{prefix}hash"), redis.execute("INCR", f"{prefix}n")]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    (wrong_type, counted), _ = run(stack, scenario)
    assert isinstance(wrong_type, ResponseError) and "WRONGTYPE" in str(wrong_type)
    assert counted == 1


def test_replies_are_parsed_as_the_client_parses_them(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        await redis.execute("HSET", f"{prefix}hash", "a", 1)
        return list(await asyncio.gather(redis.execute("HGETALL", f"{prefix}hash"), redis.execute("TIME")))

    (fields, now), _ = run(stack, scenario)
    assert fields == {b"a": b"1"}
    assert isinstance(now, tuple) and len(now) == 2


def test_a_script_redis_no_longer_holds_is_loaded_again(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        echo = redis.client.register_script(_ECHO)
        first = await redis.script(echo, [f"{prefix}k"], ["one"])
        await redis.client.script_flush()  # what a Redis restart does to loaded scripts
        return [first, await redis.script(echo, [f"{prefix}k"], ["two"])]

    (first, second), _ = run(stack, scenario)
    assert first[1] == b"one" and second[1] == b"two"


def test_no_connection_fails_every_command_of_the_write(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        redis.client.connection_pool.connection_kwargs["port"] = 1  # nothing listens there
        await redis.client.connection_pool.disconnect()
        calls = (redis.execute("INCR", f"{prefix}n") for _ in range(3))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    failures, _ = run(stack, scenario)
    assert len(failures) == 3 and all(isinstance(failure, RedisConnectionError) for failure in failures)


def test_an_argument_redis_cannot_take_fails_only_its_command(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        calls = [redis.execute("SET", f"{prefix}k", None), redis.execute("INCR", f"{prefix}n")]
        return list(await asyncio.gather(*calls, return_exceptions=True))

    (refused, counted), writes = run(stack, scenario)
    assert isinstance(refused, DataError) and counted == 1 and writes == 1


async def _blocked_while_killed(redis: RoundTrips, other: Any, key: str, kills: int) -> tuple[Any, list[int]]:
    """A BLPOP waiting on Redis while its connection is killed `kills` times, then a value to pop: its
    result (or error) and the ids of the connections it waited on, in order."""
    name = f"rt-{uuid.uuid4().hex[:8]}"  # its connections' name: only they are killed, whatever else runs
    redis.client.connection_pool.connection_kwargs["client_name"] = name
    blocked = asyncio.ensure_future(redis.execute("BLPOP", key, 5))
    waited_on: list[int] = []
    for _ in range(kills):
        waited_on.append(await _blocking_client(other, name))
        await other.execute_command("CLIENT", "KILL", "ID", waited_on[-1])
    if kills < 2:  # a command goes out once more after a break, not twice
        waited_on.append(await _blocking_client(other, name))
        await other.rpush(key, "value")
    return (await asyncio.gather(blocked, return_exceptions=True))[0], waited_on


async def _blocking_client(other: Any, name: str) -> int:
    """The id of the connection called `name` blocked in BLPOP, once there is one."""
    for _ in range(200):
        blocked = [c for c in await other.client_list() if c["cmd"] == "blpop" and c["name"] == name]
        if blocked:
            return int(blocked[0]["id"])
        await asyncio.sleep(0.01)
    raise AssertionError("no connection waits in BLPOP")


@pytest.mark.parametrize("kills", [1, 2])
def test_a_connection_that_breaks_sends_its_waiting_commands_once_more(stack: TrimtabConfig, kills: int) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> tuple[Any, list[int], bytes]:
        other = redis_client(stack.redis)
        try:
            return *await _blocked_while_killed(redis, other, f"{prefix}list", kills), f"{prefix}list".encode()
        finally:
            await other.aclose()

    (result, waited_on, key), writes = run(stack, scenario)
    assert len(set(waited_on)) == 2 and writes == 2  # the command went out on a second connection
    if kills == 1:  # left alone there, it answers
        assert result == (key, b"value")
    else:  # killed again: its caller gets the connection's error
        assert isinstance(result, RedisConnectionError)


def test_a_connection_whose_replies_stop_for_its_socket_timeout_counts_as_broken(stack: TrimtabConfig) -> None:
    quick = stack.model_copy(
        update={"redis": stack.redis.model_copy(update={"url": f"{stack.redis.url}?socket_timeout=0.2"})}
    )

    async def scenario(redis: RoundTrips, prefix: str) -> tuple[Any, float]:
        started = time.monotonic()
        blocked = await asyncio.gather(redis.execute("BLPOP", f"{prefix}list", 3), return_exceptions=True)
        return blocked[0], time.monotonic() - started

    (result, waited_s), writes = run(quick, scenario)
    # Redis holds BLPOP for 3 s: after 0.2 s without a reply the connection is dropped, the command goes
    # out once more on a new one, and after 0.2 s more its caller gets the timeout.
    assert isinstance(result, RedisTimeoutError) and writes == 2
    assert 0.4 <= waited_s < 2.0
