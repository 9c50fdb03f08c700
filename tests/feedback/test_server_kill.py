"""The kill test: SIGKILL `python -m feedback` twice in the middle of a load while clients retry,
submitting one at a time or in batches.

Afterwards the topic holds exactly one event per feedback_id, and it is the event every acceptance of
that id named: events on the topic == acceptances, no duplicates, none lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.feedback.processes import (
    FeedbackProcess,
    Ledger,
    process_config,
    put_records,
    retrying_batch_client,
    retrying_client,
)
from tests.feedback.support import response_ids, thumb, topic_records
from trimtab.config import TrimtabConfig
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration

SUBMISSIONS = 240
CLIENTS = 8
LOAD_LIMIT_S = 90


@pytest.fixture
def feedback_process(stack: TrimtabConfig, tmp_path: Path) -> Iterator[tuple[FeedbackProcess, TrimtabConfig]]:
    config = process_config(stack, "test.kill")
    process = FeedbackProcess(config, tmp_path / "feedback.log")
    process.start()
    yield process, config
    if process.process is not None and process.process.poll() is None:
        process.kill()


@pytest.mark.parametrize("client", [retrying_client, retrying_batch_client], ids=["Submit", "SubmitBatch"])
def test_sigkill_mid_load_leaves_exactly_one_event_per_acceptance(
    feedback_process: tuple[FeedbackProcess, TrimtabConfig], client: Callable[..., None]
) -> None:
    process, config = feedback_process
    records = put_records(config, SUBMISSIONS // 2)
    requests = [
        thumb(response_id, user_id=record.user_id, up=index % 3 != 0, feedback_id=f"kill-{uuid.uuid4()}")
        for record in records
        for index, response_id in enumerate(response_ids(record))
    ]
    seen = Ledger()
    stop = time.monotonic() + LOAD_LIMIT_S
    shares = [requests[i::CLIENTS] for i in range(CLIENTS)]
    threads = [threading.Thread(target=client, args=(process.grpc_address, share, seen, stop)) for share in shares]
    for thread in threads:
        thread.start()
    for fraction in (1 / 3, 2 / 3):  # kill twice, each time with calls in flight
        while len(seen.accepted) < fraction * len(requests) and time.monotonic() < stop:
            time.sleep(0.01)
        process.kill()
        time.sleep(0.3)
        process.start()
    for thread in threads:
        thread.join(timeout=LOAD_LIMIT_S)
    assert process.terminate() == 0  # SIGTERM: a graceful drain and a clean exit

    assert len(seen.accepted) == len(requests), f"not all accepted within {LOAD_LIMIT_S} s"
    assert seen.failures, "the kills went unnoticed: the test did not exercise retries"
    topic = config.kafka.topics.feedback.name
    events = [events_pb2.FeedbackEvent.FromString(r.value) for r in topic_records(config, topic)]
    per_id = Counter(event.feedback_id for event in events)
    duplicates = {fid: n for fid, n in per_id.items() if n > 1}
    assert duplicates == {}, f"duplicated on the topic: {duplicates}"
    assert set(per_id) == set(seen.accepted)  # events == acceptances: none lost, none unasked for
    event_ids = {event.feedback_id: event.event_id for event in events}
    for feedback_id, responses in seen.accepted.items():
        assert {r.event_id for r in responses} == {event_ids[feedback_id]}, feedback_id
