"""RoundTrips: commands issued together share one pipeline, and each caller gets its own reply or error."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client

pytestmark = pytest.mark.integration

_ECHO = "return {KEYS[1], ARGV[1]}"


def run(stack: TrimtabConfig, scenario: Any) -> Any:
    async def wrapped() -> Any:
        client = redis_client(stack.redis)
        pipelines = 0
        make_pipeline = client.pipeline

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal pipelines
            pipelines += 1
            return make_pipeline(*args, **kwargs)

        client.pipeline = counted  # type: ignore[method-assign]
        try:
            result = await scenario(RoundTrips(client), f"{stack.redis.key_prefix}rt-{uuid.uuid4().hex[:6]}:")
            return result, pipelines
        finally:
            await client.aclose()

    return asyncio.run(wrapped())


def test_commands_issued_in_one_turn_go_out_as_one_pipeline_in_order(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        return list(await asyncio.gather(*(redis.execute("INCR", f"{prefix}n") for _ in range(50))))

    replies, pipelines = run(stack, scenario)
    assert replies == list(range(1, 51)) and pipelines == 1


def test_a_command_alone_goes_out_at_once(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        return [await redis.execute("INCR", f"{prefix}n") for _ in range(3)]

    replies, pipelines = run(stack, scenario)
    assert replies == [1, 2, 3] and pipelines == 3


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


def test_no_connection_fails_every_command_of_the_pipeline(stack: TrimtabConfig) -> None:
    async def scenario(redis: RoundTrips, prefix: str) -> list[Any]:
        redis.client.connection_pool.connection_kwargs["port"] = 1  # nothing listens there
        await redis.client.connection_pool.disconnect()
        calls = (redis.execute("INCR", f"{prefix}n") for _ in range(3))
        return list(await asyncio.gather(*calls, return_exceptions=True))

    failures, _ = run(stack, scenario)
    assert len(failures) == 3 and all(isinstance(failure, RedisConnectionError) for failure in failures)
