"""The feedback service's settings: endpoints, validation limits, exactly-once timing, abuse limits.

The defaults and the reasoning behind them are documented in README.md ("Feedback") and in the
`feedback` package's docstrings; each field says what it bounds.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trimtab.config.base import Section


class RateLimit(Section):
    """A sliding-window limit: at most `max_requests` in any `window_s` seconds."""

    max_requests: int = Field(ge=1, description="Calls allowed in any window.")
    window_s: float = Field(gt=0, description="Length of the sliding window, in seconds.")


class TrainingCap(Section):
    """How much of one user's feedback may reach training per window. Beyond the cap feedback is still
    accepted and written (it counts for statistics), marked `over_training_cap` with weight 0."""

    max_events: int = Field(default=500, ge=1, description="Trainable events per user per window.")
    window_s: float = Field(default=24 * 3600.0, gt=0, description="Length of the sliding window, in seconds.")


class AgreementConfig(Section):
    """The per-user agreement score against the population, and when a user is flagged."""

    min_population_votes: int = Field(
        default=3, ge=1, description="Other users' votes a response (or pair) needs before it can be compared."
    )
    min_comparable_votes: int = Field(
        default=10, ge=1, description="Comparable votes a user needs before a score is reported or a flag is set."
    )
    flag_p_value: float = Field(
        default=0.001,
        gt=0,
        lt=0.5,
        description="Flag when so few agreements would happen this rarely (one-sided binomial, p=0.5) by chance.",
    )
    flagged_weight: float = Field(default=0.1, ge=0, le=1, description="Training weight suggested for flagged users.")
    state_ttl_s: int = Field(
        default=30 * 24 * 3600, ge=1, description="How long population tallies and user scores live after last use."
    )


class FreshRecords(Section):
    """Feedback that arrives before serving has written the judged response's record. Serving mints a
    response id ("resp_" + a ULID, which carries the time) when Generate admits the request, and writes
    the record to Redis just after the reply, off the reply path; a client that submits at once can get
    here first. A missing record of an id minted less than `window_s` ago is waited for, then answered
    UNAVAILABLE with retry-after, never NOT_FOUND. Reasoning behind the defaults: docs/feedback.md."""

    window_s: float = Field(
        default=120.0,
        ge=0,
        description="How old (by its ULID) a response id may be and still have its record on the way: the longest"
        " Generate (queued and generated; the id is minted before both) plus the record's lag. Older: NOT_FOUND."
        " 0: never wait.",
    )
    wait_s: float = Field(
        default=2.0,
        ge=0,
        description="How long one call waits for such a record (never past window_s) before UNAVAILABLE.",
    )
    clock_skew_s: float = Field(
        default=5.0,
        ge=0,
        description="How far in the future a response id's time may be (serving's clock ahead of this one's);"
        " further: NOT_FOUND, it is not an id serving minted.",
    )
    max_waiting: int = Field(
        default=1000,
        ge=0,
        description="Calls waiting for records at once; beyond it a call gets UNAVAILABLE at once (a flood of made-up"
        " fresh ids costs polls, not a growing queue).",
    )


class CohortSettings(Section):
    """Under load, calls wait briefly to go on together (`feedback.cohorts`): their Redis steps and produce
    requests are shared, about half the CPU per submission with 32 clients. A call arriving while nothing
    is in flight, or while cohorts gather too few calls to pay (a few clients), goes on at once."""

    quiet_ms: float = Field(
        default=3.0, gt=0, description="A forming cohort goes on this long after its latest arrival."
    )
    min_calls: int = Field(
        default=4,
        ge=1,
        description="Calls wait for cohorts while the last one gathered at least this many; below it, only a probe"
        " every 0.1 s does (to notice more load).",
    )
    max_wait_ms: float = Field(
        default=10.0,
        ge=0,
        description="The longest a call waits for its cohort (the most a Submit's latency grows). 0: no cohorts,"
        " every call goes on at once.",
    )


class FeedbackConfig(Section):
    """Feedback ingestion: ports, validation limits, idempotency, abuse limits."""

    grpc_host: str = Field(default="127.0.0.1", description="Bind address of the gRPC FeedbackService.")
    grpc_port: int = Field(default=50052, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_host: str = Field(default="127.0.0.1", description="Bind address of the HTTP/JSON API.")
    http_port: int = Field(default=8052, ge=0, le=65535, description="HTTP port (0 picks a free one).")
    workers: int = Field(
        default=1,
        ge=1,
        description="Processes serving both transports on the same ports (SO_REUSEPORT): one process uses about one"
        " core, and the kernel spreads client connections (not calls) among them. Needs fixed ports.",
    )
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The process's event loop: uvloop (libuv, less CPU per call) or the standard library's.",
    )
    max_request_bytes: int = Field(
        default=1 << 20,
        ge=1024,
        description="Largest request body (HTTP) or message (gRPC) read at all; a SubmitBatch is one body.",
    )
    max_batch_items: int = Field(default=256, ge=1, description="Most submissions in one SubmitBatch call.")
    max_id_chars: int = Field(default=128, ge=1, description="Longest feedback_id, user_id or response_id.")
    max_correction_chars: int = Field(default=16_384, ge=1, description="Longest correction text.")
    max_comment_chars: int = Field(default=4096, ge=1, description="Longest comment text.")
    produce_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="How long a call waits for the broker's ack before UNAVAILABLE; also the producer's delivery"
        " timeout, so a record not written by then never is.",
    )
    lease_s: float = Field(
        default=30.0,
        gt=0,
        description="How long a submission in flight owns its feedback_id. A retry after it has expired (the owner"
        " died or gave up) looks for the event on the topic before writing it. At least 2 x produce_timeout_s + 2.",
    )
    in_progress_wait_s: float = Field(
        default=2.0, ge=0, description="How long a retry waits for a concurrent call with the same feedback_id."
    )
    idempotency_ttl_s: int = Field(
        default=7 * 24 * 3600, ge=60, description="How long feedback_ids (and each user's latest vote) are remembered."
    )
    user_rate: RateLimit = Field(
        default=RateLimit(max_requests=120, window_s=60.0),
        description="New submissions per user (per tenant) per window; beyond it RESOURCE_EXHAUSTED.",
    )
    key_rate: RateLimit = Field(
        default=RateLimit(max_requests=60_000, window_s=60.0),
        description="Calls per API key (retries included) per window; beyond it RESOURCE_EXHAUSTED.",
    )
    fresh_records: FreshRecords = Field(
        default_factory=FreshRecords, description="Waiting for response records serving has not written yet."
    )
    training_cap: TrainingCap = Field(default_factory=TrainingCap, description="Per-user cap on trainable feedback.")
    agreement: AgreementConfig = Field(default_factory=AgreementConfig, description="Agreement score and flagging.")
    cohorts: CohortSettings = Field(
        default_factory=CohortSettings, description="Calls under load going on together (feedback.cohorts)."
    )
    redis_connections: int = Field(
        default=64,
        ge=1,
        description="Redis connections the service may open. Its calls' steps share one (feedback.roundtrips);"
        " more are taken only while a broken one is replaced, or by code that uses the client directly.",
    )
    redis_wait_s: float = Field(
        default=5.0, gt=0, description="How long a call waits for a free Redis connection before UNAVAILABLE."
    )
    drain_grace_s: float = Field(default=5.0, ge=0, description="On SIGTERM: how long calls in flight may finish.")

    @model_validator(mode="after")
    def _lease_outlives_a_produce(self) -> FeedbackConfig:
        # The lease starts before the send. A call hands its record to the producer only while at least
        # 2 x produce_timeout_s + 1 s of the lease is left (the send may block for metadata up to
        # produce_timeout_s, delivery takes at most produce_timeout_s more, 1 s for the broker), so
        # when the lease ends no write can be in flight and another call may trust what the topic
        # says. The lease must leave at least a second for that.
        least = 2 * self.produce_timeout_s + 2
        if self.lease_s < least:
            raise ValueError(f"lease_s ({self.lease_s}) must be at least 2 x produce_timeout_s + 2 ({least})")
        return self

    @model_validator(mode="after")
    def _workers_share_fixed_ports(self) -> FeedbackConfig:
        # Port 0 would give each worker a port of its own: clients could reach only one of them.
        if self.workers > 1 and 0 in (self.grpc_port, self.http_port):
            raise ValueError(f"workers ({self.workers}) share the gRPC and HTTP ports: set both (grpc_port, http_port)")
        return self
