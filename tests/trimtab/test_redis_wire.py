"""Commands packed in C are byte for byte what redis-py's own packer writes, and refused where it refuses."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import DataError

from trimtab.config import TrimtabConfig
from trimtab.records import redis_client
from trimtab.redis_wire import pack_in_c

COMMANDS = [
    ("SET", "trimtab:key", b"\x00\xffbytes", "EX", 60),
    ("CONFIG GET", "maxmemory"),  # a two-word command name is sent as two words
    (b"CLIENT LIST",),
    ("EVALSHA", "a" * 40, 2, "k1", "k2", "ünïcode", -7, 2**70, 1.25, 0.1, memoryview(b"mv")),
    ("SET", "k", bytearray(b"a bytearray")),
    ("SET", "k", b"x" * 100_000),  # above redis-py's buffer cutoff: it writes the value as a chunk of its own
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: str(command[0]))
def test_packed_in_c_is_what_redis_py_writes(command: tuple[object, ...]) -> None:
    plain = aioredis.Connection()
    packed = pack_in_c(aioredis.ConnectionPool()).make_connection()
    assert b"".join(packed.pack_command(*command)) == b"".join(plain.pack_command(*command))
    assert b"".join(packed.pack_commands([command, command])) == b"".join(plain.pack_commands([command, command]))


@pytest.mark.parametrize("bad", [True, None, {"a": 1}])
def test_an_argument_redis_py_refuses_is_refused_with_its_error(bad: object) -> None:
    packed = pack_in_c(aioredis.ConnectionPool()).make_connection()
    with pytest.raises(DataError):
        aioredis.Connection().pack_command("SET", "k", bad)
    with pytest.raises(DataError):
        packed.pack_command("SET", "k", bad)
    with pytest.raises(DataError):  # beside an argument only redis-py takes as is
        packed.pack_command("SET", bytearray(b"k"), bad)


def test_tls_and_unix_socket_pools_keep_their_connection_class() -> None:
    tls = pack_in_c(aioredis.ConnectionPool.from_url("rediss://127.0.0.1:6380/0"))
    unix = pack_in_c(aioredis.ConnectionPool.from_url("unix:///tmp/redis.sock"))
    assert issubclass(tls.connection_class, aioredis.SSLConnection)
    assert issubclass(unix.connection_class, aioredis.UnixDomainSocketConnection)
    assert pack_in_c(tls).connection_class is tls.connection_class  # applied twice: one subclass


@pytest.mark.integration
def test_a_client_packing_in_c_round_trips_through_a_real_redis(stack: TrimtabConfig) -> None:
    async def scenario() -> None:
        client = redis_client(stack.redis)
        key = f"{stack.redis.key_prefix}wire:ünïcode"
        try:
            await client.set(key, b"\x00\xff", ex=60)
            async with client.pipeline(transaction=False) as pipe:
                pipe.get(key).eval("return {ARGV[1], ARGV[2]}", 0, "é", 2**40)
                assert await pipe.execute() == [b"\x00\xff", [b"\xc3\xa9", b"1099511627776"]]
        finally:
            await client.delete(key)
            await client.aclose()

    asyncio.run(scenario())
