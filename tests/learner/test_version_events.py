"""The learner's version events survive a broker that restarts empty: the next decision is written on a new
producer (an idempotent producer whose id the broker forgot fails for good; found by the loop's chaos test,
where the learner died with UnknownProducerIdError after the broker's restart)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from learner.online.telemetry import LearnerTelemetry
from learner.online.version_events import VersionEvents
from tests.chaos.support import crash
from tests.conftest import broker_of_its_own
from tests.feedback.support import topic_records
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.v1 import events_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(stack: TrimtabConfig, tmp_path: Path) -> Iterator[TrimtabConfig]:
    config = broker_of_its_own(stack, tmp_path)
    up(config)
    yield config
    down(config)


def versions_on_topic(config: TrimtabConfig) -> list[tuple[str, str]]:
    records = topic_records(config, config.kafka.topics.versions.name)
    events = [events_pb2.VersionEvent.FromString(record.value) for record in records]
    return [(events_pb2.VersionEventType.Name(e.type), e.version_id) for e in events]


def test_a_decision_after_the_broker_came_back_empty_is_written_on_a_new_producer(broker: TrimtabConfig) -> None:
    events = VersionEvents(broker, LearnerTelemetry())
    try:
        events.send(events_pb2.VERSION_EVENT_TYPE_CANARY, "ver_a", "passed its gates", {"gate/kl": 0.1})
        assert versions_on_topic(broker) == [("VERSION_EVENT_TYPE_CANARY", "ver_a")]
        crash(broker, "broker")
        events.send(events_pb2.VERSION_EVENT_TYPE_PROMOTED, "ver_a", "up-rate within the margin", {})
    finally:
        events.close()
    assert versions_on_topic(broker) == [("VERSION_EVENT_TYPE_PROMOTED", "ver_a")]  # the first went with the log
