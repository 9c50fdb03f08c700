"""Canary decisions from live feedback, and the version events that record them.

A candidate that passed the gates becomes the canary (a LoRA adapter serving `canary.share` of the
users beside current; a full-weight candidate is promoted directly, since one engine holds one set of
base weights). The judge then counts verdicts on responses served by each version and decides once both
sides have `min_feedback` verdicts (current's counted since the canary started). A verdict is a thumb;
with `canary.ratings` a 1-5 rating: 4-5 up, 1-2 down (a 3 says neither); with `canary.helpfulness` a
SteerLM attribute score's helpfulness, 0-4 (HelpSteer's overall quality): 3-4 up, 0-1 down (a 2 says
neither). Each is one user's judgement of one answer, and users are split between the sides at random,
so each side gets the same mix of kinds in expectation and the comparison stays fair; counting ratings
and scores brings each decision, and so each new version's first answers, sooner:

    d = up_rate(canary) - up_rate(current),  se = sqrt(p_c (1-p_c)/n_c + p_k (1-p_k)/n_k)
    roll back  if  d + z_conf * se < 0          (worse, at the configured one-sided confidence)
    promote    if  d >= -margin                  (not worse by more than the margin)
    roll back  if  min(n_c, n_k) >= max_feedback (neither yet: inconclusive)

and waits otherwise. The last rule bounds the wait: a canary a little worse than the margin is shown worse
only after many verdicts (the band between the first two rules narrows as 1/sqrt(n)), and every newer
candidate waits behind it meanwhile (one demo's canary held its place 67 s past its first 30 a side).
Withdrawn, it costs little: the candidate waiting next descends from it and carries its updates.

Each verdict counts at its event's abuse weight (`abuse.weight`: 0.1 for a user the feedback service flagged
for disagreeing with everyone else, as in training), so a group voting against the population moves the
decision by its weight, not its numbers: up_rate is the weighted share of ups and n Kish's effective count
(sum w)^2 / sum w^2 (both the plain ones when every weight is 1). Where the suite has a judge, the weight is
also multiplied by the user's agreement with it (`learner.online.raters`), which no group of users can
outvote.

Serving splits users afresh for each canary (`serving.routing.user_bucket`). Pairwise feedback compares
two answers of one version (both candidates of a request come from the version the user is routed to),
so it does not enter the comparison.

A candidate that passes while a canary is still being judged waits for that decision, and only the
newest waiting one is kept: replacing the canary at every round would restart its count each time,
and with rounds faster than `min_feedback` verdicts arrive nothing would ever be decided. Each
candidate descends from the previous round's, so the one that waits carries the skipped ones' updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from statistics import NormalDist
from typing import TypeVar

from learner.online.telemetry import LearnerTelemetry
from learner.online.version_events import VersionEvents
from trimtab.config import TrimtabConfig
from trimtab.registry import Registry
from trimtab.registry.commands import with_pointers
from trimtab.registry.pointers import Pointers, PointerStore
from trimtab.v1 import events_pb2, feedback_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Tally:
    """The verdicts on one version, each at its weight."""

    up: float = 0.0  # the weights of its ups
    total: float = 0.0  # the weights of all its verdicts
    squares: float = 0.0  # their squares

    def add(self, up: bool, weight: float) -> Tally:
        return Tally(self.up + weight * up, self.total + weight, self.squares + weight * weight)

    def since(self, start: Tally) -> Tally:
        return Tally(self.up - start.up, self.total - start.total, self.squares - start.squares)

    @property
    def rate(self) -> float:
        return self.up / self.total

    @property
    def count(self) -> float:
        """Kish's effective number of verdicts: what a weighted share is as sure as."""
        return self.total**2 / self.squares if self.squares > 1e-12 else 0.0


def verdict(label: feedback_pb2.FeedbackLabel, *, ratings: bool, helpfulness: bool) -> bool | None:
    """A feedback's verdict on its answer: up (True), down (False), or none (None)."""
    kind = label.WhichOneof("kind")
    if kind == "thumb":
        return label.thumb == feedback_pb2.THUMB_UP
    if kind == "rating" and ratings and label.rating != 3:
        return label.rating > 3
    scores = label.attributes
    if kind == "attributes" and helpfulness and scores.HasField("helpfulness") and scores.helpfulness != 2:
        return scores.helpfulness > 2
    return None


class CanaryJudge:
    def __init__(
        self, config: TrimtabConfig, telemetry: LearnerTelemetry | None = None, events: VersionEvents | None = None
    ) -> None:
        self.config = config
        self.telemetry = telemetry or LearnerTelemetry()
        self.events = events or VersionEvents(config, self.telemetry)
        self.settings = config.learner.online.canary
        self.verdicts: dict[str, Tally] = {}
        self.pointers = self._read()
        self.waiting: tuple[str, dict[str, float]] | None = None  # the newest passed candidate, not yet canary
        # Current's tally when each canary started: the comparison counts the same period on both sides, not
        # current's whole life (other users, other versions beside it, other times).
        self.baseline: dict[str, Tally] = {}

    def candidate(self, version_id: str, passed: bool, reasons: list[str], numbers: dict[str, float]) -> None:
        """A new candidate: the canary (or current, for full weights) if it passed the gates."""
        if not passed:
            self.events.send(events_pb2.VERSION_EVENT_TYPE_REFUSED, version_id, "; ".join(reasons), numbers)
            return
        if Registry(self.config.registry.root).get(version_id).kind != "lora":
            self._promote(version_id, "passed the gates (full weights: no canary on one replica)", numbers)
        elif self._read().canary is None:
            self._start_canary(version_id, numbers)
        else:
            if self.waiting is not None:
                log.info("%s superseded by %s before it became the canary", self.waiting[0], version_id)
            self.waiting = (version_id, numbers)

    def _start_canary(self, version_id: str, numbers: dict[str, float]) -> None:
        current = self._read().current
        if current is not None:
            self.baseline[version_id] = self.verdicts.get(current, Tally())
        share = self.settings.share
        self.pointers = self._pointers(lambda p: p.set_canary(version_id, share))
        self.events.send(events_pb2.VERSION_EVENT_TYPE_CANARY, version_id, "passed the gates", numbers, share=share)

    def observe(self, event: events_pb2.FeedbackEvent, rater_weight: float = 1.0) -> None:
        """Count the event's verdict, at its abuse weight times `rater_weight` (`learner.online.raters`)."""
        up = verdict(event.label, ratings=self.settings.ratings, helpfulness=self.settings.helpfulness)
        if up is None:
            return
        served = next((c for c in event.served.candidates if c.reply.response_id == event.response_id), None)
        if served is None:
            return
        version = served.reply.model_version
        weight = (event.abuse.weight if event.abuse.HasField("weight") else 1.0) * rater_weight
        self.verdicts[version] = self.verdicts.get(version, Tally()).add(up, weight)

    def decide(self) -> None:
        """Promote or roll back the canary when the live evidence is in; then start the waiting one."""
        self.pointers = self._read()
        canary, current = self.pointers.canary, self.pointers.current
        if canary is not None and current is not None:
            self._judge(canary, current)
        if self.pointers.canary is None and self.waiting is not None:
            (version_id, numbers), self.waiting = self.waiting, None
            self._start_canary(version_id, numbers)

    def _judge(self, canary: str, current: str) -> None:
        on_canary = self.verdicts.get(canary, Tally())
        on_current = self.verdicts.get(current, Tally()).since(self.baseline.get(canary, Tally()))
        n_canary, n_current = on_canary.count, on_current.count
        if min(n_canary, n_current) < self.settings.min_feedback - 1e-9:
            return
        p_canary, p_current = on_canary.rate, on_current.rate
        difference = p_canary - p_current
        se = math.sqrt(p_canary * (1 - p_canary) / n_canary + p_current * (1 - p_current) / n_current)
        numbers = {
            "canary/up_rate": p_canary,
            "canary/current_up_rate": p_current,
            "canary/feedback": float(n_canary),
            "canary/current_feedback": float(n_current),
        }
        z = NormalDist().inv_cdf(self.settings.confidence)
        rates = f"up-rate {p_canary:.2f} vs current {p_current:.2f}"
        confidence = f"{self.settings.confidence:.0%}"
        if difference + z * se < 0:
            self._roll_back(canary, f"{rates}: worse at {confidence}", numbers)
        elif difference >= -self.settings.margin:
            self._promote(canary, rates, numbers)
        elif min(n_canary, n_current) >= self.settings.max_feedback - 1e-9:
            margin = self.settings.margin
            said = f"below it by more than the margin {margin:.2f}, not worse at {confidence}"
            self._roll_back(
                canary, f"inconclusive after {self.settings.max_feedback} verdicts a side: {rates}, {said}", numbers
            )

    def _roll_back(self, version_id: str, reason: str, numbers: dict[str, float]) -> None:
        async def withdraw(pointers: PointerStore) -> tuple[str | None, Pointers]:
            return await pointers.clear_canary(only=version_id), await pointers.read()

        # Only while it is still the canary: an operator may have withdrawn or promoted it since the judge
        # looked, or a try whose reply was lost in a Redis restart may have withdrawn it already.
        withdrawn, self.pointers = self._pointers(withdraw)
        if withdrawn is None and self.pointers.current == version_id:
            log.info("%s was promoted while the judge was rolling it back: left as current", version_id)
            return
        if withdrawn is None:
            log.info("%s was no longer the canary when the judge rolled it back", version_id)
        self.events.send(events_pb2.VERSION_EVENT_TYPE_ROLLED_BACK, version_id, reason, numbers)

    def _promote(self, version_id: str, reason: str, numbers: dict[str, float]) -> None:
        async def promote(pointers: PointerStore) -> Pointers:
            after: Pointers = await pointers.promote(version_id)
            if after.canary == version_id:
                await pointers.clear_canary()
            return await pointers.read()

        self.pointers = self._pointers(promote)
        self.events.send(events_pb2.VERSION_EVENT_TYPE_PROMOTED, version_id, reason, numbers)

    def _read(self) -> Pointers:
        return self._pointers(lambda p: p.read())

    def _pointers(self, action: Callable[[PointerStore], Awaitable[T]]) -> T:
        """A pointer action that rides out a Redis restart (`learner.online.redis_wait_s`)."""
        return with_pointers(self.config, action, self.config.learner.online.redis_wait_s)
