"""The response log in the real Redis: one record per request, found by any candidate's id, expiring."""

from __future__ import annotations

import asyncio

import pytest

from trimtab.config import TrimtabConfig
from trimtab.ids import new_id
from trimtab.records import ResponseStore, redis_client
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration


def record_with(n_candidates: int) -> events_pb2.ResponseLogged:
    record = events_pb2.ResponseLogged(request_id=new_id("req_"), user_id="u1", tenant="t")
    record.prompt.text = "What is 3 plus 5?"
    for index in range(n_candidates):
        candidate = record.candidates.add()
        candidate.reply.index = index
        candidate.reply.response_id = new_id("resp_")
        candidate.reply.text = f"answer {index}"
        candidate.token_ids.extend([1, 2, 3])
        candidate.token_logprobs.extend([-0.1, -0.2, -0.3])
    return record


def test_any_candidate_finds_the_whole_record_until_it_expires(stack: TrimtabConfig) -> None:
    async def scenario() -> None:
        client = redis_client(stack.redis)
        store = ResponseStore(client, stack.redis.key_prefix)
        record = record_with(2)
        await store.put(record, ttl_s=1)
        for candidate in record.candidates:
            assert await store.get(candidate.reply.response_id) == record
        assert await client.ttl(store.key(record.candidates[0].reply.response_id)) in (0, 1)
        assert store.key("x").startswith(stack.redis.key_prefix)
        await asyncio.sleep(1.2)
        assert await store.get(record.candidates[0].reply.response_id) is None
        assert await store.get("resp_unknown") is None
        await client.aclose()

    asyncio.run(scenario())
