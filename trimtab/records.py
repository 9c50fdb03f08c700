"""The response log in Redis: serving writes each request's record, feedback validates against it.

A record is the `ResponseLogged` message (proto/trimtab/v1/events.proto), stored once per candidate
under `<prefix>response:<response_id>` with a TTL, so feedback on any candidate finds the whole
request (the prompt, every candidate, versions, tokens and logprobs) in one GET.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis

from trimtab.config import RedisConfig
from trimtab.redis_wire import pack_in_c
from trimtab.v1 import events_pb2


def redis_client(config: RedisConfig) -> aioredis.Redis:
    """An asyncio Redis client for the configured URL (bytes in, bytes out)."""
    client = aioredis.Redis.from_url(config.url, decode_responses=False)
    pack_in_c(client.connection_pool)
    return client


class ResponseStore:
    """Response records by response_id, with a time-to-live."""

    def __init__(self, client: aioredis.Redis, key_prefix: str) -> None:
        self._client = client
        self._prefix = key_prefix

    def key(self, response_id: str) -> str:
        return f"{self._prefix}response:{response_id}"

    async def put(self, record: events_pb2.ResponseLogged, ttl_s: int) -> None:
        """Store the record under each of its candidates' response ids, atomically."""
        await self.put_many([record], ttl_s)

    async def put_many(self, records: Sequence[events_pb2.ResponseLogged], ttl_s: int) -> None:
        """`put` for a batch of records in one atomic pipeline: one round trip."""
        async with self._client.pipeline(transaction=True) as pipe:
            for record in records:
                value = record.SerializeToString()
                for candidate in record.candidates:
                    pipe.set(self.key(candidate.reply.response_id), value, ex=ttl_s)
            await pipe.execute()

    async def get(self, response_id: str) -> events_pb2.ResponseLogged | None:
        """The record holding `response_id`, or None if it never existed or has expired."""
        value = await self._client.get(self.key(response_id))
        return self.decode(value.encode() if isinstance(value, str) else value)

    @staticmethod
    def decode(value: bytes | None) -> events_pb2.ResponseLogged | None:
        """A stored record's bytes as the message (None stays None)."""
        if value is None:
            return None
        record = events_pb2.ResponseLogged()
        record.ParseFromString(value)
        return record

    async def close(self) -> None:
        await self._client.aclose()


def purge_prefix(url: str, key_prefix: str) -> int:
    """Delete every key under `key_prefix` (a finished test or benchmark run's namespace); returns how many."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        deleted = 0
        for key in client.scan_iter(match=f"{key_prefix}*", count=1000):
            deleted += int(client.delete(key))
        return deleted
    finally:
        client.close()
