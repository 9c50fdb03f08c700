"""`trimtab lineage`'s parts on hand-made manifests: ancestry order, descendants, which versions trained
on a feedback, trace ids, and the lines it prints. (tests/loop/test_real_model.py runs the command on a
real feedback, answer and trained version.)"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

from trimtab.app.lineage import descendants, render, trace_id, trained_on
from trimtab.registry import FEEDBACK_IDS, Manifest, OffsetRange, Registry

T0 = datetime(2026, 12, 4, tzinfo=UTC)


def manifest(version: str, parent: str | None, minutes: int, offsets: list[OffsetRange] | None = None) -> Manifest:
    return Manifest(
        id=version,
        kind="full",
        parent=parent,
        algorithm="online" if parent else "import",
        created_at=T0 + timedelta(minutes=minutes),
        offsets=offsets or [],
        files={},
    )


# Version ids as the registry makes them ("ver_" + a ULID): it refuses any other name.
V0, V1, V2, V3, V4 = (f"ver_{n:026d}" for n in range(5))


def test_descendants_are_every_version_trained_from_it_oldest_first() -> None:
    versions = [
        manifest("ver_c", "ver_b", 3),
        manifest("ver_a", None, 0),
        manifest("ver_b", "ver_a", 1),
        manifest("ver_x", None, 2),
        manifest("ver_d", "ver_a", 4),
    ]
    assert descendants(versions, "ver_a") == ["ver_b", "ver_c", "ver_d"]
    assert descendants(versions, "ver_c") == []


def test_a_feedback_was_trained_into_the_versions_that_list_it_or_whose_offsets_cover_it(tmp_path: Path) -> None:
    registry = Registry(tmp_path)
    topic = "trimtab.feedback"
    versions = [
        manifest(V1, V0, 1, [OffsetRange(topic=topic, partition=0, start=0, end=10)]),  # lists it
        manifest(V2, V1, 2, [OffsetRange(topic=topic, partition=0, start=0, end=10)]),  # lists others
        manifest(V3, V2, 3, [OffsetRange(topic=topic, partition=0, start=5, end=8)]),  # no list: offsets
        manifest(V4, V3, 4, [OffsetRange(topic=topic, partition=1, start=0, end=10)]),  # other partition
    ]
    for version, listed in ((V1, ["fb-7"]), (V2, ["fb-8"])):
        (tmp_path / version).mkdir()
        (registry.path(version) / FEEDBACK_IDS).write_text(json.dumps(listed))
    assert trained_on(registry, versions, "fb-7", (topic, 0, 7)) == [V1, V3]
    assert trained_on(registry, versions, "fb-9", (topic, 0, 9)) == []


def test_the_trace_id_comes_from_a_w3c_traceparent() -> None:
    parent = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
    assert trace_id(parent) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id({}) is None and trace_id({"traceparent": "garbage"}) is None


def test_the_lines_name_the_versions_offsets_and_trace() -> None:
    version = {
        "version": {"id": "ver_2", "kind": "lora", "algorithm": "online", "created_at": T0, "serving": "current"},
        "ancestry": [{"id": "ver_1", "kind": "full", "algorithm": "import", "created_at": T0}],
        "trained_on": {
            "data_source": "trimtab.feedback",
            "offsets": [{"topic": "trimtab.feedback", "partition": 0, "start": 3, "end": 15}],
            "event_counts": {"kto": 12},
        },
        "metrics": {"gate/candidate_kl": 0.5},
        "descendants": [],
    }
    lines = render(version)
    assert lines[0].startswith("version ver_2: lora online") and lines[0].endswith("serving as current")
    assert "trimtab.feedback[0] 3-15" in lines[1] and "gate/candidate_kl=0.5" in lines[2]
    assert lines[3].startswith("  from: ver_1 (full import")
    feedback = {
        "feedback": {
            "id": "fb-1",
            "state": "accepted",
            "event_id": "evt_1",
            "user": "u",
            "label": {"thumb": "THUMB_UP"},
            "record": {"topic": "trimtab.feedback", "partition": 0, "offset": 4},
            "trace_id": "abc",
        },
        "judged": [{"response": "resp_1", "served_by": "ver_1"}],
        "trained_into": [],
        "inherited_by": [],
    }
    lines = render(feedback)
    assert "offset 4" in lines[0] and "judged: resp_1 (served by ver_1)" in lines[2]
    assert "trained into: no version yet" in lines[3] and lines[-1] == "  trace: abc"
