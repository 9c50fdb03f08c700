"""`trimtab lineage ID`: where a response, a feedback or a version came from and what it went into.

- A response id (`resp_...`): the request, user and tenant, the version that answered and which versions
  produced which tokens (a hot swap mid-answer shows two), the version's ancestry, the trace id.
- A version id (`ver_...`): what it is, its ancestry down to the imported model, what it was trained on
  (the data source, the feedback topic's offset ranges, the event counts), its gate metrics, whether it
  serves now (current or canary), and the versions trained from it.
- Anything else is a feedback id: its acceptance (event id, topic, partition, offset), what it judged
  and which version had answered, the versions that trained on it, and their descendants.

Read from the registry's manifests and the records in Redis (the response log, the feedback service's
exactly-once ledger), so a response or feedback is found while its record lives
(serving.response_ttl_s, feedback.idempotency_ttl_s); versions are found for as long as the registry
keeps them.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf.json_format import MessageToDict

from feedback.keys import Keys
from feedback.ledger import Ledger
from feedback.roundtrips import RoundTrips
from trimtab.config import TrimtabConfig
from trimtab.errors import TrimtabError
from trimtab.ids import RESPONSE_ID_PREFIX
from trimtab.records import ResponseStore, redis_client
from trimtab.registry import (
    FEEDBACK_IDS,
    VERSION_PREFIX,
    Manifest,
    Pointers,
    PointerStore,
    Registry,
    RegistryError,
)
from trimtab.v1 import events_pb2, inference_pb2

Lineage = dict[str, Any]


class NotFound(TrimtabError):
    """No response, version or feedback has this id (or its record has expired)."""


@dataclass(frozen=True)
class Sources:
    """What lineage reads."""

    registry: Registry
    pointers: Pointers
    responses: ResponseStore
    ledger: Ledger
    keys: Keys
    feedback_topic: str


def ancestry(registry: Registry, version_id: str) -> list[Manifest]:
    """The version's parents, nearest first, down to the imported model (or the first one the registry lost)."""
    chain: list[Manifest] = []
    parent = registry.get(version_id).parent
    while parent is not None and parent not in {m.id for m in chain}:
        try:
            manifest = registry.get(parent)
        except RegistryError:
            break
        chain.append(manifest)
        parent = manifest.parent
    return chain


def descendants(manifests: list[Manifest], version_id: str) -> list[str]:
    """Every version trained from this one, directly or not, oldest first."""
    found = {version_id}
    for manifest in sorted(manifests, key=lambda m: m.created_at):
        if manifest.parent in found:
            found.add(manifest.id)
    return [m.id for m in sorted(manifests, key=lambda m: m.created_at) if m.id in found - {version_id}]


def trained_on(
    registry: Registry, manifests: list[Manifest], feedback_id: str, record: tuple[str, int, int]
) -> list[str]:
    """The versions that trained on one feedback, oldest first: those that list it (`feedback_ids.json`, which
    the online learner writes), and those without such a list whose training offsets cover its record
    (topic, partition, offset). A version that lists its feedback but not this one consumed it without
    training on it (a comment, a filtered vote)."""
    topic, partition, offset = record
    trained = []
    for manifest in sorted(manifests, key=lambda m: m.created_at):
        listed = registry.path(manifest.id) / FEEDBACK_IDS
        if listed.is_file():
            if feedback_id in json.loads(listed.read_text()):
                trained.append(manifest.id)
        elif any(r.topic == topic and r.partition == partition and r.start <= offset < r.end for r in manifest.offsets):
            trained.append(manifest.id)
    return trained


def trace_id(trace_context: dict[str, str]) -> str | None:
    """The trace id in a W3C traceparent (`00-<trace id>-<span id>-<flags>`), to open in a trace viewer."""
    parts = trace_context.get("traceparent", "").split("-")
    return parts[1] if len(parts) == 4 else None


def _brief(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "kind": manifest.kind,
        "algorithm": manifest.algorithm,
        "created_at": manifest.created_at,
    }


def version_lineage(sources: Sources, version_id: str) -> Lineage:
    try:
        manifest = sources.registry.get(version_id)
    except RegistryError:
        raise NotFound(f"no version {version_id!r} in the registry at {sources.registry.root}") from None
    role = {sources.pointers.current: "current", sources.pointers.canary: "canary"}.get(version_id)
    return {
        "version": _brief(manifest) | {"base": manifest.base, "serving": role},
        "ancestry": [_brief(parent) for parent in ancestry(sources.registry, version_id)],
        "trained_on": {
            "data_source": manifest.data_source,
            "offsets": [r.model_dump() for r in manifest.offsets],
            "event_counts": manifest.event_counts,
        },
        "metrics": manifest.metrics,
        "descendants": descendants(sources.registry.versions(), version_id),
    }


async def response_lineage(sources: Sources, response_id: str) -> Lineage:
    record = await sources.responses.get(response_id)
    if record is None:
        raise NotFound(f"no response record {response_id!r} (unknown, or expired after serving.response_ttl_s)")
    candidate = next(c.reply for c in record.candidates if c.reply.response_id == response_id)
    return {
        "response": {
            "id": response_id,
            "request_id": record.request_id,
            "candidate": candidate.index,
            "of_candidates": len(record.candidates),
            "user": record.user_id,
            "tenant": record.tenant,
            "received_at": record.received_at.ToJsonString(),
            "finish_reason": inference_pb2.FinishReason.Name(candidate.finish_reason),
            "trace_id": trace_id(dict(record.trace_context)),
        },
        "served_by": candidate.model_version,
        "version_spans": [
            {"version": s.version_id, "tokens": [s.token_start, s.token_end]} for s in candidate.version_spans
        ],
        "ancestry": _known_ancestry(sources.registry, candidate.model_version),
    }


async def feedback_lineage(sources: Sources, feedback_id: str) -> Lineage:
    entry = await sources.ledger.get(sources.keys.submission(feedback_id))
    if entry is None:
        raise NotFound(
            f"no response, version or feedback with id {feedback_id!r} (a feedback id is kept for"
            " feedback.idempotency_ttl_s; response ids start with resp_, version ids with ver_)"
        )
    event = events_pb2.FeedbackEvent.FromString(entry.template)
    label = MessageToDict(event.label, preserving_proto_field_name=True)
    judged = [event.response_id] if event.response_id else list(label.get("pairwise", {}).values())[:2]
    answered_by = {
        c.reply.response_id: c.reply.model_version for c in event.served.candidates if c.reply.response_id in judged
    }
    manifests = sources.registry.versions()
    record = (sources.feedback_topic, entry.partition, entry.offset if entry.offset is not None else -1)
    trained = trained_on(sources.registry, manifests, feedback_id, record)
    inherited = sorted({d for version in trained for d in descendants(manifests, version)} - set(trained))
    return {
        "feedback": {
            "id": feedback_id,
            "state": entry.state,
            "event_id": entry.event_id,
            "user": event.user_id,
            "label": label,
            "record": {"topic": sources.feedback_topic, "partition": entry.partition, "offset": entry.offset},
            "trace_id": trace_id(dict(event.served.trace_context)),
        },
        "judged": [{"response": r, "served_by": answered_by.get(r)} for r in judged],
        "trained_into": trained,
        "inherited_by": inherited,
    }


def _known_ancestry(registry: Registry, version_id: str) -> list[dict[str, Any]]:
    """A serving label may be `adapter@base` (a base swapped under an adapter's request): the adapter's."""
    try:
        return [_brief(registry.get(version_id.split("@")[0]))] + [
            _brief(m) for m in ancestry(registry, version_id.split("@")[0])
        ]
    except RegistryError:
        return []


async def lineage(config: TrimtabConfig, identifier: str) -> Lineage:
    client = redis_client(config.redis)
    keys = Keys(config.redis.key_prefix)
    try:
        pointers = await PointerStore(client, config.redis.key_prefix, config.registry.channel).read()
        sources = Sources(
            registry=Registry(config.registry.root),
            pointers=pointers,
            responses=ResponseStore(client, config.redis.key_prefix),
            ledger=Ledger(RoundTrips(client), config.feedback.lease_s, config.feedback.idempotency_ttl_s, keys.epoch()),
            keys=keys,
            feedback_topic=config.kafka.topics.feedback.name,
        )
        if identifier.startswith(VERSION_PREFIX):
            return version_lineage(sources, identifier)
        if identifier.startswith(RESPONSE_ID_PREFIX):
            return await response_lineage(sources, identifier)
        return await feedback_lineage(sources, identifier)
    finally:
        await client.aclose()


def render(found: Lineage) -> list[str]:
    """The lineage as lines for a terminal (`--json` prints `found` itself)."""
    lines: list[str] = []
    if "version" in found:
        version = found["version"]
        serving = f", serving as {version['serving']}" if version["serving"] else ""
        lines.append(
            f"version {version['id']}: {version['kind']} {version['algorithm']}, {version['created_at']}{serving}"
        )
        trained = found["trained_on"]
        if trained["offsets"] or trained["data_source"]:
            ranges = ", ".join(f"{r['topic']}[{r['partition']}] {r['start']}-{r['end']}" for r in trained["offsets"])
            lines.append(
                f"  trained on: {trained['data_source'] or '-'} {ranges} {trained['event_counts'] or ''}".rstrip()
            )
        if found["metrics"]:
            lines.append("  metrics: " + " ".join(f"{k}={v:.4g}" for k, v in sorted(found["metrics"].items())))
    if "response" in found:
        response = found["response"]
        lines.append(
            f"response {response['id']}: candidate {response['candidate']} of {response['of_candidates']} of request"
            f" {response['request_id']}, user {response['user']!r} (tenant {response['tenant']}),"
            f" {response['received_at']}, {response['finish_reason']}"
        )
        lines.append(f"  served by: {found['served_by']}")
        for span in found["version_spans"]:
            lines.append(f"    tokens {span['tokens'][0]}-{span['tokens'][1]}: {span['version']}")
    if "feedback" in found:
        feedback = found["feedback"]
        record = feedback["record"]
        lines.append(
            f"feedback {feedback['id']}: {feedback['state']}, event {feedback['event_id']} at"
            f" {record['topic']}[{record['partition']}] offset {record['offset']}, user {feedback['user']!r}"
        )
        lines.append(f"  label: {feedback['label']}")
        for judged in found["judged"]:
            lines.append(f"  judged: {judged['response']} (served by {judged['served_by']})")
        lines.append(f"  trained into: {', '.join(found['trained_into']) or 'no version yet'}")
        if found["inherited_by"]:
            lines.append(f"  inherited by: {', '.join(found['inherited_by'])}")
    for ancestor in found.get("ancestry", [])[1 if "response" in found else 0 :]:
        lines.append(f"  from: {ancestor['id']} ({ancestor['kind']} {ancestor['algorithm']}, {ancestor['created_at']})")
    if found.get("descendants"):
        lines.append(f"  trained from it: {', '.join(found['descendants'])}")
    trace = (found.get("response") or found.get("feedback") or {}).get("trace_id")
    if trace:
        lines.append(f"  trace: {trace}")
    return lines


def run(config: TrimtabConfig, identifier: str, as_json: bool, report: Callable[[str], None] = print) -> int:
    try:
        found = asyncio.run(lineage(config, identifier))
    except NotFound as exc:
        report(f"trimtab lineage: {exc}")
        return 1
    if as_json:
        report(json.dumps(found, indent=2, default=str))
    else:
        for line in render(found):
            report(line)
    return 0
