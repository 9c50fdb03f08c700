"""Redis commands packed by hiredis (C) on redis-py's asyncio connections.

redis-py's asyncio connections write each command with a Python packer (its sync client uses hiredis
when it is installed, the asyncio one does not): ~14 µs for the feedback ledger's 30-argument
admission script against ~2 µs in hiredis, and every submission sends three scripts. The wire bytes
are the same (checked in tests/trimtab/test_redis_wire.py); an argument neither packer takes (a bool, a
None) fails as redis-py's own packer fails, with DataError. The common case is one call into hiredis.
"""

from __future__ import annotations

from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.exceptions import DataError


class _PackedInC:
    """Mixed in before a redis-py asyncio connection class."""

    def pack_command(self, *args: Any) -> list[bytes]:
        # As redis-py's packer: a command name with a space ("CONFIG GET") is sent as separate words.
        if isinstance(args[0], str):
            args = tuple(args[0].encode().split()) + args[1:]
        elif b" " in args[0]:
            args = tuple(args[0].split()) + args[1:]
        try:
            return [hiredis.pack_command(args)]
        except TypeError:  # hiredis takes str, bytes, int, float and memoryview; redis-py also a bytearray
            args = tuple(bytes(arg) if isinstance(arg, bytearray) else arg for arg in args)
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # a bool, None, ...: the arguments stay out of the message (they may be user data)
            raise DataError(f"a Redis command argument of an unsupported type ({exc})") from None


def pack_in_c(pool: aioredis.ConnectionPool) -> aioredis.ConnectionPool:
    """`pool`, its new connections packing in C (TLS, Unix sockets and every other setting kept)."""
    base = pool.connection_class
    if not issubclass(base, _PackedInC):
        pool.connection_class = type(f"PackedInC{base.__name__}", (_PackedInC, base), {})
    return pool
