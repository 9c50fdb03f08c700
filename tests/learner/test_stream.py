"""The online learner's reader of the feedback topic when the broker loses the log and the feedback service
writes it again: the loss is noticed and said, and each event is read once (those read before the loss
are skipped, the rest and the new ones are read)."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from kafka import KafkaProducer

from learner.online.memory import LearnerMemory
from learner.online.stream import FeedbackStream, Fence
from tests.conftest import broker_of_its_own
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.events import ORIGINAL_OFFSET_HEADER, RECOVERY_HEADER, encode, event_producer
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(stack: TrimtabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrimtabConfig]:
    """A broker of its own with a one-partition feedback topic."""
    config = broker_of_its_own(stack, tmp_path_factory.mktemp("stream-broker"))
    data = config.model_dump()
    data["kafka"]["topics"]["feedback"]["partitions"] = 1
    config = TrimtabConfig.model_validate(data)
    up(config)
    yield config
    down(config)


def write(config: TrimtabConfig, names: list[str], recovery: str | None = None) -> None:
    """FeedbackEvents with these feedback ids; with `recovery`, marked as written again (old offset = index)."""
    producer: KafkaProducer = event_producer(config.kafka, "test")
    for index, name in enumerate(names):
        value, headers = encode(events_pb2.FeedbackEvent(feedback_id=name, event_id=f"fbk_{name}"))
        if recovery is not None:
            headers += [(ORIGINAL_OFFSET_HEADER, str(index).encode()), (RECOVERY_HEADER, recovery.encode())]
        producer.send(config.kafka.topics.feedback.name, key=b"k", value=value, headers=headers, partition=0)
    producer.flush()
    producer.close()


def read(stream: FeedbackStream, count: int | None, quiet_s: float = 2.0) -> list[str]:
    """Feedback ids read: `count` of them, or everything until nothing new came for `quiet_s`."""
    names: list[str] = []
    last = time.monotonic()
    while (count is None or len(names) < count) and time.monotonic() - last < quiet_s:
        batch = stream.poll(timeout_s=0.2, max_records=(count - len(names)) if count else 500)
        if batch:
            last = time.monotonic()
        names += [consumed.event.feedback_id for consumed in batch]
    return names


@pytest.mark.parametrize("noticed", ["before the log is written again", "on an event written again"])
def test_after_a_broker_loss_each_event_is_read_once(
    broker: TrimtabConfig, caplog: pytest.LogCaptureFixture, noticed: str
) -> None:
    old = [f"e{i}" for i in range(10)]
    write(broker, old)
    fences: dict[int, Fence] = {}
    stream = FeedbackStream(broker.kafka, "test-learner", {}, fences)
    try:
        before = read(stream, 6)
        down(broker)  # the broker's memory log is gone
        up(broker)  # back, with the topic created again, empty
        if noticed == "before the log is written again":
            # What the reader had fetched before the loss still comes (it was on the log), then the loss.
            before += read(stream, None, quiet_s=1.0)
            assert fences == {0: Fence(len(before))} and stream.lost == {0}
        # As the feedback service does: a write that raced the recovery, then every accepted event, marked.
        write(broker, ["n0"])
        write(broker, old, recovery="rcv_1")
        with caplog.at_level(logging.ERROR, logger="learner.online.stream"):
            after = read(stream, None)
    finally:
        stream.close()
    assert before == old[: len(before)] and len(before) >= 6
    assert Counter(before + after) == Counter([*old, "n0"])  # each once: none lost, none read twice
    read_before = fences[0].position
    assert fences == {0: Fence(read_before, "rcv_1")} and stream.read_before_loss == read_before
    said = [r.getMessage() for r in caplog.records if r.name == "learner.online.stream"]
    if noticed == "on an event written again":
        assert len(said) == 1 and f"read it up to offset {read_before}" in said[0] and "rcv_1" in said[0]


def test_fences_travel_in_the_checkpoint() -> None:
    memory = LearnerMemory(fences={0: Fence(6, "rcv_1"), 3: Fence(2)})
    assert LearnerMemory.from_json(memory.to_json()).fences == memory.fences
