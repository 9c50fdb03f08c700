"""The learner's decisions on its versions as VersionEvents on the versions topic, each also counted
(`trimtab.learner.version_events`): PUBLISHED for every version a round writes (gates on or off, canary
or not), then REFUSED, CANARY, PROMOTED or ROLLED_BACK from the canary judge. Rank 0 only. The ops
page and `trimtab lineage` read them."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from learner.online.telemetry import LearnerTelemetry
from trimtab.config import TrimtabConfig
from trimtab.events import event_producer, send_event
from trimtab.ids import new_id
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)


class VersionEvents:
    def __init__(self, config: TrimtabConfig, telemetry: LearnerTelemetry) -> None:
        self._topic = config.kafka.topics.versions.name
        self._telemetry = telemetry
        self._producer = event_producer(config.kafka, "learner")

    def send(
        self,
        kind: events_pb2.VersionEventType,
        version_id: str,
        reason: str,
        numbers: dict[str, float],
        *,
        share: float = 0.0,
        parent: str = "",
    ) -> None:
        """Written and acknowledged before the caller goes on (a decision the topic missed is no decision)."""
        event = events_pb2.VersionEvent(
            event_id=new_id("vev_"),
            type=kind,
            version_id=version_id,
            parent_version_id=parent,
            reason=reason,
            actor="learner",
            metrics=numbers,
            canary_share=share,
        )
        event.occurred_at.FromDatetime(datetime.now(UTC))
        send_event(self._producer, self._topic, version_id, event).get(timeout=10)
        name = events_pb2.VersionEventType.Name(kind).removeprefix("VERSION_EVENT_TYPE_")
        self._telemetry.version_event(name)
        log.info("%s %s: %s", name, version_id, reason)

    def close(self) -> None:
        self._producer.close(timeout=10)
