"""What the chaos tests share: crashing the local broker or Redis, the exactly-once count on the topic,
and the memory slope of a soak."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

from tests.conftest import REPO, kill_local
from tests.feedback.processes import Ledger
from tests.feedback.support import topic_records
from trimtab.app.stack import up
from trimtab.config import TrimtabConfig
from trimtab.v1 import events_pb2

ARTIFACTS = REPO / ".trimtab/test-artifacts"
MAX_RSS_SLOPE_MIB_PER_MIN = 2.0


def crash(config: TrimtabConfig, service: str) -> None:
    """The broker or Redis killed and started again: the broker empty (its log was in memory, `up`
    creates the topic again), Redis with every write it acknowledged (its append-only file)."""
    kill_local(config, service)
    up(config)


def assert_exactly_once(config: TrimtabConfig, seen: Ledger, expected: int) -> None:
    # The topic first: a run whose clients ran out of time still says whether what was accepted held.
    events = [
        events_pb2.FeedbackEvent.FromString(r.value)
        for r in topic_records(config, config.kafka.topics.feedback.name, timeout_s=60)
    ]
    per_id = Counter(event.feedback_id for event in events)
    assert {fid: n for fid, n in per_id.items() if n > 1} == {}, "duplicated on the topic"
    lost = set(seen.accepted) - set(per_id)
    assert not lost, f"{len(lost)} accepted submissions are not on the topic"
    assert len(seen.accepted) == expected, f"{expected - len(seen.accepted)} submissions never accepted"
    assert set(per_id) == set(seen.accepted)  # events == acceptances: none lost, none unasked for
    event_ids = {event.feedback_id: event.event_id for event in events}
    for feedback_id, responses in seen.accepted.items():
        assert {r.event_id for r in responses} == {event_ids[feedback_id]}, feedback_id


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def floor(members: Mapping[str, list[tuple[float, float]]], minutes: float = 1.0) -> list[tuple[float, float]]:
    """A process tree's memory floor: in each window of `minutes` from the first sample, the sum of each
    member's lowest sample in it, at the window's middle. A trainer's RSS rises for each step's activations
    and falls back; a leak raises the floor."""
    start = min(t for points in members.values() for t, _ in points)
    windows: dict[int, dict[str, float]] = {}
    for member, points in members.items():
        for t, rss in points:
            lowest = windows.setdefault(int((t - start) // minutes), {})
            lowest[member] = min(rss, lowest.get(member, rss))
    return [(start + (k + 0.5) * minutes, sum(lowest.values())) for k, lowest in sorted(windows.items())]
