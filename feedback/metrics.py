"""The feedback service's metrics, through the process's OpenTelemetry meter provider.

trimtab.feedback.accepted          counter    kind, replayed ("true" when a retry got the original)
trimtab.feedback.rejected          counter    reason (invalid_argument, not_found, rate_limited_user, ...)
trimtab.feedback.rate_limited      counter    scope (user, api_key)
trimtab.feedback.flagged_users     counter    users newly flagged by the agreement score
trimtab.feedback.produce_latency   histogram  seconds from send to the broker's ack
trimtab.feedback.rail_violations   counter    kind, use: accepted feedback on a response an output rail
                                              stopped, by how the learner may train it (as_is, flip, drop)
trimtab.feedback.record_waits      counter    outcome: submissions that found a fresh response's record
                                              missing and waited for it (feedback.records), by how the wait
                                              ended: found, timed_out (UNAVAILABLE), too_many (UNAVAILABLE at
                                              once: max_waiting calls were waiting already)
trimtab.feedback.record_wait       histogram  seconds from the first miss to the record (found only): how far
                                              serving's response log lags the replies
trimtab.feedback.cohort_calls      histogram  calls that went on together (feedback.cohorts), per start: a call that
                                              did not wait counts as a cohort of one
trimtab.feedback.cohort_wait       histogram  seconds a cohort's first call waited (cohorts that waited only)
"""

from __future__ import annotations

from opentelemetry import metrics
from opentelemetry.metrics import Meter

from trimtab.telemetry import FAST_BUCKETS_S


class FeedbackMetrics:
    def __init__(self, meter: Meter | None = None) -> None:
        meter = meter or metrics.get_meter("trimtab.feedback")
        self._accepted = meter.create_counter("trimtab.feedback.accepted", description="Accepted submissions.")
        self._rejected = meter.create_counter("trimtab.feedback.rejected", description="Refused submissions.")
        self._rate_limited = meter.create_counter(
            "trimtab.feedback.rate_limited", description="Submissions refused by a rate limit."
        )
        self._flagged = meter.create_counter(
            "trimtab.feedback.flagged_users", description="Users newly flagged for disagreeing with the population."
        )
        self._violations = meter.create_counter(
            "trimtab.feedback.rail_violations",
            description="Accepted feedback on responses a guardrail stopped, by kind and how it may be trained.",
        )
        self._latency = meter.create_histogram(
            "trimtab.feedback.produce_latency",
            unit="s",
            description="Send to broker ack, per event.",
            explicit_bucket_boundaries_advisory=FAST_BUCKETS_S,
        )
        self._record_waits = meter.create_counter(
            "trimtab.feedback.record_waits", description="Waits for a fresh response's record, by outcome."
        )
        self._broker_loss = meter.create_counter(
            "trimtab.feedback.broker_loss_events",
            description="Accepted events the broker lost, by outcome: written_again, or expired (lost for good).",
        )
        self._redis_loss = meter.create_counter(
            "trimtab.feedback.redis_loss_entries",
            description="Events a ledger rebuild read, by outcome: restored, already_there, or too_old to matter.",
        )
        self._record_wait = meter.create_histogram(
            "trimtab.feedback.record_wait",
            unit="s",
            description="First miss to the record landing, per found wait.",
            explicit_bucket_boundaries_advisory=FAST_BUCKETS_S,
        )
        self._cohort_calls = meter.create_histogram(
            "trimtab.feedback.cohort_calls",
            description="Calls that went on together, per start (a call that did not wait: one).",
            explicit_bucket_boundaries_advisory=[1, 2, 4, 8, 16, 32, 64, 128, 256],
        )
        self._cohort_wait = meter.create_histogram(
            "trimtab.feedback.cohort_wait",
            unit="s",
            description="How long a cohort's first call waited for the others.",
            explicit_bucket_boundaries_advisory=FAST_BUCKETS_S,
        )

    def accepted(self, kind: str, replayed: bool) -> None:
        self._accepted.add(1, {"kind": kind, "replayed": str(replayed).lower()})

    def rejected(self, reason: str) -> None:
        self._rejected.add(1, {"reason": reason})
        if reason.startswith("rate_limited_"):
            self._rate_limited.add(1, {"scope": reason.removeprefix("rate_limited_")})

    def user_flagged(self) -> None:
        self._flagged.add(1)

    def rail_violation(self, kind: str, use: str) -> None:
        self._violations.add(1, {"kind": kind, "use": use})

    def produce_latency(self, seconds: float) -> None:
        self._latency.record(seconds)

    def record_wait(self, outcome: str, seconds: float | None = None) -> None:
        """A wait for a fresh record ended: found (after `seconds`), timed_out or too_many."""
        self._record_waits.add(1, {"outcome": outcome})
        if seconds is not None:
            self._record_wait.record(seconds)

    def went_on(self, calls: int, waited_s: float | None = None) -> None:
        """`calls` went on together, after `waited_s` of waiting for each other (None: one that did not wait)."""
        self._cohort_calls.record(calls)
        if waited_s is not None:
            self._cohort_wait.record(waited_s)

    def redis_loss(self, restored: int, already_there: int, too_old: int) -> None:
        self._redis_loss.add(restored, {"outcome": "restored"})
        self._redis_loss.add(already_there, {"outcome": "already_there"})
        self._redis_loss.add(too_old, {"outcome": "too_old"})

    def broker_loss(self, written_again: int, expired: int) -> None:
        self._broker_loss.add(written_again, {"outcome": "written_again"})
        self._broker_loss.add(expired, {"outcome": "expired"})
