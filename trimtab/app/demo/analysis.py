"""The report's numbers, shaped from the run's records: pure functions, no plotting, no I/O.

Time is seconds since the users started; series are cut into bins of `bin_s` seconds and labelled by
the bin's centre. An answer belongs to the version that served it (`Answer.version`).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from trimtab.app.demo.records import CpuSample, Interaction, SwapEvent, TrainedVersion

Point = tuple[float, str, float]  # (time, version, value)


@dataclass(frozen=True)
class Bin:
    centre_s: float
    mean: float
    count: int


@dataclass(frozen=True)
class VersionStats:
    """How one version did while it served."""

    version: str
    first_s: float
    last_s: float
    answers: int
    mean_reward: float
    thumbs: int
    thumbs_up_rate: float | None  # None when no thumb was given on its answers
    kl: float | None  # from its manifest, when recorded


@dataclass(frozen=True)
class FailureBin:
    start_s: float
    requests: int
    failed: int


@dataclass(frozen=True)
class Summary:
    """The run in numbers (the printed table and the report's header)."""

    duration_s: float
    interactions: int
    failed: int
    interactions_per_s: float
    accepted: dict[str, int]  # feedback accepted, by kind
    retries: int
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    answers: int
    mean_reward_first: float | None  # first `window` answers
    mean_reward_last: float | None  # last `window` answers
    thumbs_up_rate: float | None
    versions_served: int
    swaps: int
    failed_swaps: int
    max_stall_ms: float | None
    errors: dict[str, int]  # failure message (without details) -> count


def answer_rewards(interactions: Iterable[Interaction]) -> list[Point]:
    """(time, version, gold reward) of every answer served, in time order."""
    points = [(i.at_s, a.version, a.reward) for i in interactions for a in i.answers]
    return sorted(points, key=lambda p: p[0])


def thumbs(interactions: Iterable[Interaction]) -> list[Point]:
    """(time, version, 1.0 for up / 0.0 for down) of every thumb given, in time order."""
    points = [(i.at_s, i.answers[0].version, float(i.thumbs_up)) for i in interactions if i.thumbs_up is not None]
    return sorted(points, key=lambda p: p[0])


def binned_by_version(points: Sequence[Point], bin_s: float) -> dict[str, list[Bin]]:
    """Mean value per version per time bin (bins without points are left out)."""
    if bin_s <= 0:
        raise ValueError(f"bin_s must be positive, got {bin_s}")
    sums: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for at_s, version, value in points:
        sums[version][math.floor(at_s / bin_s)].append(value)
    return {
        version: [Bin((b + 0.5) * bin_s, sum(values) / len(values), len(values)) for b, values in sorted(bins.items())]
        for version, bins in sums.items()
    }


def version_order(interactions: Iterable[Interaction], swaps: Iterable[SwapEvent] = ()) -> list[str]:
    """Every version seen, in order of first appearance (served answers, then swap targets)."""
    seen: dict[str, None] = {}
    for interaction in sorted(interactions, key=lambda i: i.at_s):
        for answer in interaction.answers:
            seen.setdefault(answer.version)
    for swap in swaps:
        seen.setdefault(swap.to_version)
    return list(seen)


def version_stats(interactions: Sequence[Interaction], kl: Mapping[str, float | None]) -> list[VersionStats]:
    """Per version that served answers, in order of first appearance."""
    rewards = answer_rewards(interactions)
    ups = thumbs(interactions)
    stats = []
    for version in version_order(interactions):
        times = [t for t, v, _ in rewards if v == version]
        values = [r for _, v, r in rewards if v == version]
        given = [up for _, v, up in ups if v == version]
        stats.append(
            VersionStats(
                version=version,
                first_s=min(times),
                last_s=max(times),
                answers=len(values),
                mean_reward=sum(values) / len(values),
                thumbs=len(given),
                thumbs_up_rate=sum(given) / len(given) if given else None,
                kl=kl.get(version),
            )
        )
    return stats


def failures_by_bin(interactions: Iterable[Interaction], bin_s: float, duration_s: float) -> list[FailureBin]:
    """Requests started and requests failed per time bin, every bin of the run (zeros included)."""
    n_bins = max(1, math.ceil(duration_s / bin_s))
    requests, failed = [0] * n_bins, [0] * n_bins
    for interaction in interactions:
        b = min(n_bins - 1, max(0, math.floor(interaction.at_s / bin_s)))
        requests[b] += 1
        failed[b] += interaction.failed
    return [FailureBin(b * bin_s, requests[b], failed[b]) for b in range(n_bins)]


def latencies(interactions: Iterable[Interaction]) -> list[tuple[float, float]]:
    """(time, Generate latency) of every successful Generate, in time order."""
    return sorted((i.at_s, i.latency_s) for i in interactions if i.latency_s is not None)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) by linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarize(
    interactions: Sequence[Interaction], swaps: Sequence[SwapEvent], duration_s: float, window: int
) -> Summary:
    rewards = [r for _, _, r in answer_rewards(interactions)]
    ups = [up for _, _, up in thumbs(interactions)]
    times = [latency for _, latency in latencies(interactions)]
    accepted = Counter(i.kind for i in interactions if i.accepted)
    errors = Counter(i.error.split(":")[0] for i in interactions if i.error)
    return Summary(
        duration_s=duration_s,
        interactions=len(interactions),
        failed=sum(i.failed for i in interactions),
        interactions_per_s=len(interactions) / duration_s if duration_s > 0 else 0.0,
        accepted=dict(sorted(accepted.items())),
        retries=sum(i.retries for i in interactions),
        latency_p50_s=percentile(times, 50),
        latency_p95_s=percentile(times, 95),
        latency_max_s=max(times, default=None),
        answers=len(rewards),
        mean_reward_first=_mean(rewards[:window]),
        mean_reward_last=_mean(rewards[-window:]),
        thumbs_up_rate=_mean(ups),
        versions_served=len(version_order(interactions)),
        swaps=sum(s.ok for s in swaps),
        failed_swaps=sum(not s.ok for s in swaps),
        max_stall_ms=max((s.stall_ms for s in swaps if s.ok), default=None),
        errors=dict(errors.most_common()),
    )


@dataclass(frozen=True)
class Freshness:
    """How long accepted feedback took to shape what users are served: for each accepted event, the time
    from its acceptance to the first answer served by a version trained on it (itself or through an
    ancestor), over the events that got there."""

    accepted: int  # accepted events with a known feedback id
    reached: int  # served, by a version trained on them, during the run
    trained_unserved: int  # trained by some version, none of which served during the run
    untrained: int  # in no version's lineage (not trained yet, or never trainable: ties, ratings, ...)
    p50_s: float | None
    p90_s: float | None

    @property
    def never_reached(self) -> int:
        return self.accepted - self.reached


def lineage_feedback(versions: Iterable[TrainedVersion]) -> dict[str, frozenset[str]]:
    """Version -> every feedback id it was trained on, in its own round or in an ancestor's."""
    by_id = {version.version: version for version in versions}
    lineage: dict[str, frozenset[str]] = {}

    def of(version_id: str) -> frozenset[str]:
        chain: list[TrainedVersion] = []  # walked iteratively: lineages are as long as the run has rounds
        walk: str | None = version_id
        while walk in by_id and walk not in lineage:
            chain.append(by_id[walk])
            walk = by_id[walk].parent
        inherited = lineage.get(walk, frozenset()) if walk is not None else frozenset()
        for version in reversed(chain):
            inherited = lineage[version.version] = inherited | version.feedback_ids
        return lineage[version_id]

    for version_id in by_id:
        of(version_id)
    return lineage


def first_served(interactions: Iterable[Interaction]) -> dict[str, float]:
    """Version -> when its first answer reached a user (the Generate call's end)."""
    first: dict[str, float] = {}
    for interaction in interactions:
        if interaction.latency_s is None:
            continue
        done_s = interaction.at_s + interaction.latency_s
        for answer in interaction.answers:
            first[answer.version] = min(done_s, first.get(answer.version, math.inf))
    return first


def freshness(interactions: Sequence[Interaction], versions: Sequence[TrainedVersion]) -> Freshness:
    """Feedback-to-policy freshness of a run (see `Freshness`); `versions` are what the learner published."""
    lineage = lineage_feedback(versions)
    served = first_served(interactions)
    reach: dict[str, float] = {}  # feedback id -> first time a version trained on it served
    trained: set[str] = set()
    for version_id, feedback_ids in lineage.items():
        trained |= feedback_ids
        if version_id in served:
            for feedback_id in feedback_ids:
                reach[feedback_id] = min(served[version_id], reach.get(feedback_id, math.inf))
    accepted = {  # feedback id -> when it was accepted
        i.feedback_id: i.accepted_at_s
        for i in interactions
        if i.accepted and i.feedback_id is not None and i.accepted_at_s is not None
    }
    delays = [reach[feedback_id] - at_s for feedback_id, at_s in accepted.items() if feedback_id in reach]
    never = [feedback_id for feedback_id in accepted if feedback_id not in reach]
    unserved = sum(feedback_id in trained for feedback_id in never)
    return Freshness(
        accepted=len(accepted),
        reached=len(delays),
        trained_unserved=unserved,
        untrained=len(never) - unserved,
        p50_s=percentile(delays, 50),
        p90_s=percentile(delays, 90),
    )


def cpu_at(samples: Sequence[CpuSample], at_s: float) -> float | None:
    """CPU seconds used by `at_s`: the first sample taken then or later (None: none was)."""
    return next((sample.cpu_s for sample in sorted(samples, key=lambda s: s.at_s) if sample.at_s >= at_s), None)


def per_cpu_minute(gain: float, cpu_s: float | None) -> float | None:
    """A gain divided by the CPU minutes spent on it (None without a positive CPU time)."""
    return gain / (cpu_s / 60) if cpu_s else None


@dataclass(frozen=True)
class LearnerCost:
    """What the version under test (the final check's) cost in learner CPU, and what it gained."""

    total_cpu_s: float | None  # the learner's process tree, start to exit
    version: str | None
    version_cpu_s: float | None  # used by the time that version was published (its rounds, gates, waits)
    gain: float | None  # its held-out gold-reward gain over the default model

    @property
    def gain_per_cpu_minute(self) -> float | None:
        if self.gain is None:
            return None
        return per_cpu_minute(self.gain, self.version_cpu_s if self.version_cpu_s is not None else self.total_cpu_s)


def learner_cost(
    samples: Sequence[CpuSample],
    total_cpu_s: float | None,
    versions: Sequence[TrainedVersion],
    version: str | None,
    gain: float | None,
) -> LearnerCost:
    """The CPU behind `version` (None: no version was checked): sampled at its publication."""
    published = next((v.published_s for v in versions if v.version == version), None)
    version_cpu = cpu_at(samples, published) if published is not None else None
    return LearnerCost(total_cpu_s, version, version_cpu, gain)


def short_version(version: str) -> str:
    """A version id short enough for a legend: ULID ids differ in their last characters."""
    return version if len(version) <= 14 else f"{version[:4]}…{version[-6:]}"


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None
