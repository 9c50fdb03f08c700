"""Two feedback instances on one ledger when Redis loses it (`feedback.redis_loss`): one rebuilds it from the
topic, the other waits and adopts the rebuilt ledger; every retry of an accepted feedback is answered as
its first acceptance by either instance. (A Redis killed and started empty, one instance: tests/chaos/
test_feedback_chaos.py.)"""

from __future__ import annotations

import pytest

from tests.feedback.support import InProcessServer, fresh_topic, response_ids, response_record, service_config, thumb
from tests.metrics import series
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client

pytestmark = pytest.mark.integration


def test_one_instance_rebuilds_the_lost_ledger_and_the_other_adopts_it(stack: TrimtabConfig) -> None:
    config = service_config(stack, fresh_topic("test.redis-loss"), produce_timeout_s=1.0, lease_s=4.0)
    first, second = InProcessServer(config), InProcessServer(config)
    try:
        requests = []
        for server in (first, second):
            for _ in range(10):
                record = server.put(response_record())
                requests += [(server, thumb(response_ids(record)[0], user_id=record.user_id))]
        answers = {request.feedback_id: server.submit(request) for server, request in requests}

        async def forget_everything() -> None:  # as a Redis restarted without persistence would
            client = redis_client(config.redis)
            keys = [key async for key in client.scan_iter(match=f"{config.redis.key_prefix}*")]
            await client.delete(*keys)
            await client.aclose()

        first.run(forget_everything())
        # Each retry goes to the other instance than the first time: both find the loss.
        for server, request in requests:
            other = second if server is first else first
            again = other.submit_until_accepted(request)
            original = answers[request.feedback_id]
            assert again.replayed and (again.event_id, again.partition, again.offset) == (
                original.event_id, original.partition, original.offset
            )  # fmt: skip
        rebuilds = [server.metric_points("trimtab.feedback.redis_loss_entries") for server in (first, second)]
        # One instance rebuilt (all 20 restored); the other adopted its ledger without reading the topic.
        assert sorted(rebuilds, key=len) == [
            {},
            {series(outcome="restored"): 20, series(outcome="already_there"): 0, series(outcome="too_old"): 0},
        ]
    finally:
        first.close()
        second.close()
