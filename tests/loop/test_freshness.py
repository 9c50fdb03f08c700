"""Feedback-to-policy freshness and learner cost from a run's records: pure functions, worked by hand."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bench.loop import batch_freshness
from trimtab.app.demo import analysis
from trimtab.app.demo.archive import read_feedback
from trimtab.app.demo.quality import QualityCheck
from trimtab.app.demo.records import Answer, Clock, CpuSample, Interaction, LearnerCpu, TrainedVersion, trained_versions
from trimtab.app.demo.report import RunRecords, write_report
from trimtab.registry import FEEDBACK_IDS, Registry
from trimtab.registry.store import LORA_FILES
from trimtab.v1 import events_pb2

DEFAULT = "ver_default"


def served(at_s: float, latency_s: float, version: str, feedback_id: str | None = None, accepted_at_s: float = 0.0):
    """An interaction answered by `version` at at_s + latency_s, its feedback accepted at accepted_at_s."""
    answer = Answer(f"resp-{at_s}", version, (version,), 1.0, True, False)
    return Interaction(
        0, at_s, "thumb", "user-1", False, latency_s, (answer,), True,
        accepted=feedback_id is not None, feedback_id=feedback_id,
        accepted_at_s=accepted_at_s if feedback_id is not None else None,
    )  # fmt: skip


# v1 trained a, b; v2 (its child) trained c; v3 (v2's child) trained d and never served; e was never trained.
VERSIONS = [
    TrainedVersion("v1", DEFAULT, 20.0, frozenset({"a", "b"})),
    TrainedVersion("v2", "v1", 60.0, frozenset({"c"})),
    TrainedVersion("v3", "v2", 90.0, frozenset({"d"})),
]
INTERACTIONS = [
    served(9.0, 0.5, DEFAULT, "a", accepted_at_s=10.0),
    served(11.0, 0.5, DEFAULT, "b", accepted_at_s=12.0),
    served(29.0, 0.5, DEFAULT, "c", accepted_at_s=30.0),
    served(40.0, 2.0, "v1"),  # v1 first reaches a user at 42
    served(45.0, 1.0, "v1"),
    served(49.0, 0.5, "v1", "d", accepted_at_s=50.0),
    served(54.0, 0.5, "v1", "e", accepted_at_s=55.0),
    served(70.0, 1.0, "v2"),  # v2 first at 71
    Interaction(9, 80.0, "thumb", "user-2", False, error="Generate UNAVAILABLE: down"),
]


def test_lineage_is_a_versions_own_feedback_and_its_ancestors() -> None:
    lineage = analysis.lineage_feedback(reversed(VERSIONS))  # any order
    assert lineage == {"v1": {"a", "b"}, "v2": {"a", "b", "c"}, "v3": {"a", "b", "c", "d"}}


def test_freshness_is_acceptance_to_the_first_answer_of_a_version_that_trained_it() -> None:
    fresh = analysis.freshness(INTERACTIONS, VERSIONS)
    # a: 42 - 10 = 32, b: 42 - 12 = 30 (v1; v2 at 71 is later), c: 71 - 30 = 41 (v2)
    assert (fresh.accepted, fresh.reached, fresh.trained_unserved, fresh.untrained) == (5, 3, 1, 1)
    assert fresh.never_reached == 2  # d (v3 never served) and e (never trained)
    assert fresh.p50_s == pytest.approx(32.0)
    assert fresh.p90_s == pytest.approx(32.0 + 0.8 * (41.0 - 32.0))  # rank 1.8 of [30, 32, 41]


def test_records_without_feedback_ids_count_nothing() -> None:
    old = [served(1.0, 0.5, "v1")]  # an older run: answers, no feedback ids
    fresh = analysis.freshness(old, VERSIONS)
    assert (fresh.accepted, fresh.reached, fresh.p50_s) == (0, 0, None)


def test_cpu_of_the_checked_version_is_the_first_sample_at_its_publication() -> None:
    samples = [CpuSample(10.0, 30.0), CpuSample(20.0, 50.0), CpuSample(30.0, 90.0), CpuSample(61.0, 180.0)]
    assert analysis.cpu_at(samples, 20.0) == 50.0
    assert analysis.cpu_at(samples, 21.0) == 90.0
    assert analysis.cpu_at(samples, 62.0) is None
    cost = analysis.learner_cost(samples, 300.0, VERSIONS, "v2", gain=0.6)
    assert cost.version_cpu_s == 180.0  # v2 published at 60 s: the sample at 61 s
    assert cost.gain_per_cpu_minute == pytest.approx(0.6 / 3.0)
    unsampled = analysis.learner_cost(samples, 300.0, VERSIONS, "v3", gain=0.5)  # published after the last sample
    assert unsampled.version_cpu_s is None and unsampled.gain_per_cpu_minute == pytest.approx(0.5 / 5.0)


def test_a_batch_version_ready_at_the_end_is_as_fresh_as_the_wait_for_the_end() -> None:
    delays = batch_freshness(INTERACTIONS, {"a", "c", "e"}, ready_s=100.0)
    assert sorted(delays) == [45.0, 70.0, 90.0]


def test_the_report_shows_freshness_and_cost(tmp_path: Path) -> None:
    quality = QualityCheck("v2", "/models/default", 16, 0.7, 0.9, 0.3, 1.2)
    cpu = LearnerCpu((CpuSample(61.0, 180.0),), 300.0)
    records = RunRecords(
        INTERACTIONS, [], [], {}, duration_s=90.0, quality=quality, trained=VERSIONS, learner_cpu=cpu
    )  # fmt: skip
    report = write_report(tmp_path, records, bin_s=30.0, window=10)
    assert report.cost is not None and report.cost.gain_per_cpu_minute == pytest.approx(0.6 / 3.0)
    page = report.html.read_text()
    assert "feedback -&gt; serving" in page and "3 of 5 accepted events reached serving" in page
    assert "+0.200 (r* +0.600)" in page
    assert "3.0 CPU min until v2 was published" in page


def test_archived_feedback_reads_back_as_events(tmp_path: Path) -> None:
    events = [events_pb2.FeedbackEvent(feedback_id=f"fb-{n}", user_id="user-1", response_id="r") for n in range(3)]
    archive = tmp_path / "feedback.events"
    archive.write_text("".join(base64.b64encode(e.SerializeToString()).decode() + "\n" for e in events))
    assert list(read_feedback(archive)) == events


def test_trained_versions_come_from_the_registry_on_the_run_clock(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    source = tmp_path / "adapter"
    source.mkdir()
    for name in LORA_FILES:
        (source / name).write_text("{}")
    imported = registry.publish(source, parent=None, base="ver_base", algorithm="import")
    (source / FEEDBACK_IDS).write_text(json.dumps(["b", "a"]))
    trained = registry.publish(source, parent=imported.id, base="ver_base", algorithm="online")
    clock = Clock(started_at=trained.created_at.timestamp() - 5.0)
    assert trained_versions(registry.root, clock) == [
        TrainedVersion(trained.id, imported.id, pytest.approx(5.0), frozenset({"a", "b"}))
    ]
