"""What the demo records while it runs: one `Interaction` per simulated request, the serving pointers'
changes, the hot swaps and the learner's CPU time, all on one clock (seconds since the users started);
and what the online learner published (`TrainedVersion`: which feedback each version trained on).
Written to the run directory as JSON lines, so a report can be rebuilt from a finished run."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trimtab.registry import FEEDBACK_IDS, Registry


@dataclass(frozen=True)
class Clock:
    """Seconds since the demo's users started (wall clock, so swap timestamps from serving line up)."""

    started_at: float = field(default_factory=time.time)

    def now(self) -> float:
        return time.time() - self.started_at

    def since(self, unix_s: float) -> float:
        return unix_s - self.started_at


@dataclass(frozen=True)
class Answer:
    """One served candidate and how the world's gold reward judged it."""

    response_id: str
    version: str  # the version that served it (the candidate's model_version)
    span_versions: tuple[str, ...]  # every version that produced some of its tokens (2 across a swap)
    reward: float
    well_formed: bool
    unsafe: bool


@dataclass(frozen=True)
class Interaction:
    """One simulated user's Generate call and the feedback they submitted on it."""

    index: int
    at_s: float  # when the Generate call started
    kind: str  # pairwise, thumb, rating, attributes, correction
    user_id: str
    adversarial: bool
    latency_s: float | None = None  # Generate round trip; None if it failed
    answers: tuple[Answer, ...] = ()
    thumbs_up: bool | None = None  # the thumb given (thumb interactions only)
    accepted: bool = False  # the feedback service accepted the submission
    submit_latency_s: float | None = None  # from the first Submit to the acceptance, retries included
    retries: int = 0  # Submit attempts retried (UNAVAILABLE, RESOURCE_EXHAUSTED)
    error: str | None = None  # "Generate UNAVAILABLE: ..." or "Submit ...": the request failed
    feedback_id: str | None = None  # the submission's id (SubmitResponse.feedback_id once accepted)
    accepted_at_s: float | None = None  # when the feedback service accepted it

    @property
    def failed(self) -> bool:
        return self.error is not None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Interaction:
        answers = tuple(
            Answer(**{**answer, "span_versions": tuple(answer["span_versions"])}) for answer in data["answers"]
        )
        return cls(**{**data, "answers": answers})


@dataclass(frozen=True)
class PointerChange:
    """The registry pointers as read at `at_s`, recorded whenever they change."""

    at_s: float
    current: str | None
    canary: str | None
    canary_share: float


@dataclass(frozen=True)
class SwapEvent:
    """One hot swap on the serving replica (AdminService.GetStatus swap history)."""

    at_s: float  # when the swap started
    from_version: str
    to_version: str
    stall_ms: float
    ok: bool
    error: str
    pause_mode: str


@dataclass(frozen=True)
class CpuSample:
    """CPU seconds (user + system) a process tree had used by `at_s`."""

    at_s: float
    cpu_s: float


@dataclass(frozen=True)
class LearnerCpu:
    """The online learner's CPU time: its whole process tree (torchrun, the ranks, the gates' children)."""

    samples: tuple[CpuSample, ...]  # sampled while the users ran
    total_s: float | None  # to its exit, from the kernel's accounting (None: it was never reaped)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearnerCpu:
        return cls(tuple(CpuSample(**sample) for sample in data["samples"]), data["total_s"])


@dataclass(frozen=True)
class TrainedVersion:
    """A registry version the online learner published, and the feedback its round trained on."""

    version: str
    parent: str | None
    published_s: float  # on the run's clock (negative: before the users started)
    feedback_ids: frozenset[str]  # this round's new feedback only; the rest is in its ancestors

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"feedback_ids": sorted(self.feedback_ids)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainedVersion:
        return cls(data["version"], data["parent"], data["published_s"], frozenset(data["feedback_ids"]))


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def trained_versions(registry_root: Path, clock: Clock) -> list[TrainedVersion]:
    """Every policy version in the registry that lists the feedback it trained on, oldest first (the
    learner's reward models list theirs too, but they never serve)."""
    registry = Registry(registry_root)
    trained = []
    for manifest in registry.versions():
        listed = registry.path(manifest.id) / FEEDBACK_IDS
        if listed.is_file() and manifest.kind != "reward":
            published_s = clock.since(manifest.created_at.timestamp())
            ids = frozenset(json.loads(listed.read_text()))
            trained.append(TrainedVersion(manifest.id, manifest.parent, published_s, ids))
    return trained
