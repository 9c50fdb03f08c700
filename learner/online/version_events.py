"""The learner's decisions on its versions as VersionEvents on the versions topic, each also counted
(`trimtab.learner.version_events`): PUBLISHED for every version a round writes (gates on or off, canary
or not), then REFUSED, CANARY, PROMOTED or ROLLED_BACK from the canary judge. Rank 0 only. The ops
page and `trimtab lineage` read them.

A send that fails (the broker restarting, or back empty: an idempotent producer whose id the broker forgot
fails for good) is tried again on a new producer for up to `RETRY_S`, then the error stops the learner (it
resumes from its last checkpoint). An event whose ack was lost may so be written twice; its `event_id`
tells the copies apart."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from kafka import KafkaProducer
from kafka.errors import KafkaError

from learner.online.telemetry import LearnerTelemetry
from trimtab.config import TrimtabConfig
from trimtab.events import event_producer, send_event
from trimtab.ids import new_id
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)

RETRY_S = 60.0  # longer than a broker's restart
_PAUSE_S = 1.0


class VersionEvents:
    def __init__(self, config: TrimtabConfig, telemetry: LearnerTelemetry) -> None:
        self._kafka = config.kafka
        self._topic = config.kafka.topics.versions.name
        self._telemetry = telemetry
        self._producer: KafkaProducer | None = event_producer(config.kafka, "learner")

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
        self._write(version_id, event)
        name = events_pb2.VersionEventType.Name(kind).removeprefix("VERSION_EVENT_TYPE_")
        self._telemetry.version_event(name)
        log.info("%s %s: %s", name, version_id, reason)

    def _write(self, key: str, event: events_pb2.VersionEvent) -> None:
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                if self._producer is None:
                    self._producer = event_producer(self._kafka, "learner")
                send_event(self._producer, self._topic, key, event).get(timeout=10)
                return
            except KafkaError as exc:
                self._discard()
                if time.monotonic() + _PAUSE_S > deadline:
                    raise
                log.warning("writing a version event failed (%s); trying again on a new producer", exc)
                time.sleep(_PAUSE_S)

    def _discard(self) -> None:
        if self._producer is not None:
            try:
                self._producer.close(timeout=0)
            except KafkaError as exc:  # close(0) reports what it could not flush: expected here
                log.info("discarded the version events' producer: %s", exc)
            self._producer = None

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=10)
