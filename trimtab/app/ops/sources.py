"""What the ops page reads: the registry (versions and their gate numbers), the pointers in Redis (what
serves now), the versions topic (every decision: published, canary, promoted, rolled back, refused,
with its reason) and Prometheus (the panels' series). Each source can be down on its own; the page
says which and shows the rest."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from google.protobuf.json_format import MessageToDict
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from trimtab.app.ops.panels import RATE, Panel
from trimtab.config import KafkaConfig
from trimtab.events import EventDecodeError, receive
from trimtab.registry import Manifest, Pointers
from trimtab.v1 import events_pb2


@dataclass
class VersionDecisions:
    """Every VersionEvent seen on the versions topic, by version; read incrementally by one consumer."""

    kafka: KafkaConfig
    timeout_s: float
    by_version: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    _consumer: KafkaConsumer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def refresh(self) -> str | None:
        """Read what is new on the topic (blocking: call it off the event loop); a problem, or None."""
        with self._lock:
            try:
                self._read_new()
            except KafkaError as exc:
                self.close()  # a fresh consumer (from the beginning) next time
                self.by_version.clear()
                return f"versions topic: {exc}"
            return None

    def _read_new(self) -> None:
        topic = self.kafka.topics.versions.name
        if self._consumer is None:
            consumer = KafkaConsumer(
                bootstrap_servers=self.kafka.bootstrap_servers,
                client_id=f"{self.kafka.client_id}-ops",
                enable_auto_commit=False,  # no group: every page reads the whole topic
                fetch_max_wait_ms=100,
            )
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                consumer.close()
                raise KafkaError(f"topic {topic} does not exist at {self.kafka.bootstrap_servers}")
            consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
            consumer.seek_to_beginning()
            self._consumer = consumer
        consumer = self._consumer
        assignment = list(consumer.assignment())
        ends = consumer.end_offsets(assignment)
        deadline = time.monotonic() + self.timeout_s
        while any(consumer.position(tp) < ends[tp] for tp in assignment) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200, max_records=1000).values():
                for record in records:
                    self._saw(record)

    def _saw(self, record: Any) -> None:
        try:
            event = receive(record).event
        except EventDecodeError:
            return
        if isinstance(event, events_pb2.VersionEvent):
            decision = MessageToDict(event, preserving_proto_field_name=True)
            decision["type"] = events_pb2.VersionEventType.Name(event.type).removeprefix("VERSION_EVENT_TYPE_")
            self.by_version.setdefault(event.version_id, []).append(decision)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


def version_rows(
    manifests: list[Manifest], pointers: Pointers | None, decisions: dict[str, list[dict[str, Any]]], newest: int
) -> list[dict[str, Any]]:
    """The timeline: newest first, each version with its gate numbers, its decisions and its role now."""
    rows = []
    for manifest in sorted(manifests, key=lambda m: m.created_at, reverse=True)[:newest]:
        gate = {k.removeprefix("gate/"): v for k, v in sorted(manifest.metrics.items()) if k.startswith("gate/")}
        role = ""
        if pointers is not None and manifest.id == pointers.current:
            role = "current"
        elif pointers is not None and manifest.id == pointers.canary:
            role = f"canary {pointers.canary_share:.0%}"
        rows.append(
            {
                "id": manifest.id,
                "created_at": manifest.created_at.isoformat(timespec="seconds"),
                "kind": manifest.kind,
                "algorithm": manifest.algorithm,
                "parent": manifest.parent,
                "role": role,
                "gate": gate,
                "trained_items": sum(manifest.event_counts.values()),
                "decisions": [
                    {"type": d["type"], "reason": d.get("reason", ""), "at": d.get("occurred_at", "")}
                    for d in decisions.get(manifest.id, [])
                ],
            }
        )
    return rows


async def panel_series(
    session: aiohttp.ClientSession, prometheus_url: str, panel: Panel, *, window_s: float, step_s: float
) -> dict[str, Any]:
    """One panel's series over the last `window_s`: [{legend, points: [[t, v], ...]}] per query, or its error."""
    end = time.time()
    rate_window = f"{max(60, int(4 * step_s))}s"  # at least four scrapes, as Grafana's $__rate_interval
    series: list[dict[str, Any]] = []
    for query in panel.queries:
        params: dict[str, str | float] = {"query": query.expr.replace(RATE, rate_window), "step": step_s}
        params |= {"start": end - window_s, "end": end}
        async with session.get(f"{prometheus_url}/api/v1/query_range", params=params) as response:
            body = await response.json(content_type=None)
        if body.get("status") != "success":
            return {"title": panel.title, "unit": panel.unit, "error": body.get("error", f"HTTP {response.status}")}
        for result in body["data"]["result"]:
            points = [[float(t), float(v)] for t, v in result["values"] if v not in ("NaN", "+Inf", "-Inf")]
            if points:
                series.append({"legend": _legend(query.legend, result["metric"]), "points": points})
    return {"title": panel.title, "unit": panel.unit, "series": series}


def _legend(template: str, labels: dict[str, str]) -> str:
    for name, value in labels.items():
        template = template.replace(f"{{{{{name}}}}}", value)
    return template
