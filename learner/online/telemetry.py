"""The online learner's OpenTelemetry: a `learner.round` span per round, linked to the feedback it read
(each FeedbackEvent carries its `feedback.Submit` span's context in its Kafka headers, and that span links
to the served request), with a child span per phase; and the metrics an operator alerts on: is feedback
arriving, is it trained, does it reach versions, how stale is it by then.

trimtab.learner.feedback_consumed   counter    kind (thumb, pairwise, rating, attributes, correction, comment)
trimtab.learner.feedback_skipped    counter    reason (over_training_cap, rail_violation_dropped, superseded_...)
trimtab.learner.backlog             gauge      consumed items waiting for a round
trimtab.learner.rounds              counter    outcome (passed, refused, gates_off)
trimtab.learner.phase_duration      histogram  phase (train_policy, train_reward_model, publish_reward_model,
                                               gather_weights, export, gate, publish, checkpoint)
trimtab.learner.items_trained       counter    head (policy, reward_model), algorithm: new items, not replay
trimtab.learner.loss                gauge      head, algorithm: the round's last training loss
trimtab.learner.feedback_age        histogram  seconds from the feedback's acceptance to the publish of the
                                               policy version that first trained it
trimtab.learner.version_events      counter    type (REFUSED, CANARY, PROMOTED, ROLLED_BACK): the learner's
                                               decisions on its candidates
trimtab.learner.raters              gauge      weight (full, reduced: 0.5-1, low: under 0.5): users by their
                                               agreement with the suite's judge (`learner.online.raters`),
                                               set when a round takes its items

Only rank 0 installs providers (`trimtab learn --online` under torchrun); the other ranks' instruments are
the API's no-ops.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.metrics import Meter
from opentelemetry.trace import Link, Span, Tracer

from trimtab.telemetry import SLOW_BUCKETS_S

# A round can read thousands of events; a span's links are kept in memory until it ends and exporters
# cap them anyway (the SDK's default span limit is 128).
MAX_LINKS = 64


class LearnerTelemetry:
    def __init__(self, meter: Meter | None = None, tracer: Tracer | None = None) -> None:
        meter = meter or metrics.get_meter("trimtab.learner")
        self.tracer = tracer or trace.get_tracer("trimtab.learner")
        self._consumed = meter.create_counter("trimtab.learner.feedback_consumed", description="Feedback events read.")
        self._skipped = meter.create_counter(
            "trimtab.learner.feedback_skipped", description="Feedback events not trained, by reason."
        )
        self._backlog = meter.create_gauge("trimtab.learner.backlog", description="Consumed items awaiting a round.")
        self._rounds = meter.create_counter("trimtab.learner.rounds", description="Rounds by gate outcome.")
        self._phase = meter.create_histogram(
            "trimtab.learner.phase_duration",
            unit="s",
            description="Wall time of each phase of a round.",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        self._trained = meter.create_counter(
            "trimtab.learner.items_trained", description="New feedback items trained, by head and algorithm."
        )
        self._loss = meter.create_gauge("trimtab.learner.loss", description="The round's last training loss.")
        self._age = meter.create_histogram(
            "trimtab.learner.feedback_age",
            unit="s",
            description="From the feedback's acceptance to the publish of the policy version that trained it.",
            explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
        )
        self._gate = meter.create_gauge(
            "trimtab.learner.gate", description="The last candidate's gate numbers and the KL bound, by metric."
        )
        self._version_events = meter.create_counter(
            "trimtab.learner.version_events", description="The learner's decisions on its candidates, by type."
        )
        self._raters = meter.create_gauge(
            "trimtab.learner.raters", description="Users by their weight from agreement with the suite's judge."
        )
        self._links: list[Link] = []
        self._skips_seen: dict[str, int] = {}  # the memory's running skip totals at the last poll
        self.phases: dict[str, float] = {}  # the round in hand's phases so far: seconds each, in order

    def resumed(self, skipped: Mapping[str, int]) -> None:
        """Skips counted before a restart are in the checkpoint's totals: not counted again."""
        self._skips_seen = dict(skipped)

    def consumed(self, kind: str, context: Context) -> None:
        """One feedback event read; its producer's span is linked from the round that trains it."""
        self._consumed.add(1, {"kind": kind})
        if len(self._links) < MAX_LINKS:
            span_context = trace.get_current_span(context).get_span_context()
            if span_context.is_valid:
                self._links.append(Link(span_context))

    def waiting(self, backlog: int, skipped: Mapping[str, int]) -> None:
        """After each poll: the backlog, and the skip counts' growth (the memory keeps running totals)."""
        self._backlog.set(backlog)
        for reason, total in skipped.items():
            grown = total - self._skips_seen.get(reason, 0)
            if grown > 0:
                self._skipped.add(grown, {"reason": reason})
        self._skips_seen = dict(skipped)

    def raters(self, weights: Sequence[float]) -> None:
        """Every user's rater weight now, counted by band."""
        low = sum(w < 0.5 for w in weights)
        full = sum(w >= 1.0 for w in weights)
        for band, users in (("full", full), ("reduced", len(weights) - full - low), ("low", low)):
            self._raters.set(users, {"weight": band})

    @contextmanager
    def round(self, number: int, new_items: int, backlog: int) -> Iterator[Span]:
        """The round's span, linked to the feedback read since the last one; `backlog`: what still waits."""
        self._backlog.set(backlog)
        self.phases = {}
        links, self._links = self._links, []
        attributes = {"trimtab.round": number, "trimtab.new_items": new_items}
        with self.tracer.start_as_current_span("learner.round", links=links, attributes=attributes) as span:
            yield span

    @contextmanager
    def phase(self, name: str) -> Iterator[Span]:
        started = time.monotonic()
        with self.tracer.start_as_current_span(f"learner.{name}") as span:
            yield span
        took = time.monotonic() - started
        self._phase.record(took, {"phase": name})
        self.phases[name] = self.phases.get(name, 0.0) + took

    def trained(self, head: str, counts: Mapping[str, int], metrics: Mapping[str, float]) -> None:
        """A head's round: its new items per algorithm, and each algorithm's loss (`train_round`'s metrics)."""
        for algorithm, n in counts.items():
            self._trained.add(n, {"head": head, "algorithm": algorithm})
        for name, value in metrics.items():
            algorithm, _, metric = name.partition("/")
            if metric == "loss" and not math.isnan(value):
                self._loss.set(value, {"head": head, "algorithm": algorithm})

    def round_done(
        self, version: str, outcome: str, accepted_at: Sequence[float], gate: Mapping[str, float] | None = None
    ) -> None:
        """The round's policy version is published: count its outcome, how old its feedback was, and its gate
        numbers (`gate/candidate_kl`, ... and the bound `gate/max_kl`), which alerts compare."""
        span = trace.get_current_span()  # the round's
        span.set_attribute("trimtab.version", version)
        span.set_attribute("trimtab.gate.outcome", outcome)
        self._rounds.add(1, {"outcome": outcome})
        for name, value in (gate or {}).items():
            if math.isfinite(value):
                self._gate.set(value, {"metric": name.removeprefix("gate/")})
        now = time.time()
        for accepted in accepted_at:
            if accepted > 0:
                self._age.record(max(0.0, now - accepted))

    def version_event(self, kind: str) -> None:
        self._version_events.add(1, {"type": kind})
