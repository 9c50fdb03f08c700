"""Submit, transport-neutral: authenticate, validate, admit exactly once, write, acknowledge.

    new feedback_id   shape -> look (key rate limit, the id's entry, the judged records: one script) ->
                      records (waiting briefly for fresh ones serving has not written yet) ->
                      admit (ledger.reserve) -> produce -> accept
    accepted id       same content: the original acceptance (replayed); other content: ALREADY_EXISTS
    pending id        its lease is live: wait briefly, else UNAVAILABLE with retry-after;
                      its lease expired: take it over, look for the event on the topic, write it if absent

"Accepted" is returned only after the broker acked the event. See the package docstring for why no
path can write a feedback_id's event twice.

A batch (`submit_batch`) runs each item through the same path, all at once: their Redis steps share
round trips (`feedback.roundtrips`) and their events share the producer's batches. Calls that arrive
while others are in flight start together for the same reason (`feedback.cohorts`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from typing import Any

import redis.asyncio as aioredis
from kafka.errors import KafkaError
from opentelemetry import propagate, trace
from opentelemetry.context import Context
from redis.exceptions import RedisError

from feedback import event as events
from feedback.abuse import is_trainable, polarity
from feedback.broker_loss import BrokerLossGuard
from feedback.cohorts import Cohorts
from feedback.errors import (
    FeedbackError,
    already_exists,
    internal,
    invalid,
    rate_limited,
    unauthenticated,
    unavailable,
)
from feedback.evaluation import EvaluationEvents
from feedback.keys import Keys
from feedback.ledger import ACCEPTED, REBUILT, Admission, Entry, Existing, Ledger, Limited, Lost, New
from feedback.metrics import FeedbackMetrics
from feedback.producer import BrokerUnavailable, FeedbackProducer
from feedback.records import RecordReader
from feedback.recovery import ScanTimeout, find_event
from feedback.redis_loss import RedisLossGuard
from feedback.roundtrips import RoundTrips
from feedback.validation import check_against_records, check_shape, judged_responses, kind_of
from feedback.votes import vote_target
from guardrails.training import training_label
from trimtab.auth import Authenticator, Principal, Unauthenticated
from trimtab.config import TrimtabConfig
from trimtab.ids import new_id
from trimtab.records import ResponseStore
from trimtab.telemetry import context_from_grpc
from trimtab.throttled import ThrottledWarning
from trimtab.v1 import events_pb2, feedback_pb2

log = logging.getLogger(__name__)

_POLL_S = 0.05
_AT_ONCE: AbstractAsyncContextManager[None] = nullcontext()
WARN_EVERY_S = 10.0  # while Redis is unreachable every call fails: one line per interval says so


class FeedbackService:
    """One instance per process; every call of both transports goes through `submit`."""

    def __init__(
        self,
        config: TrimtabConfig,
        redis: aioredis.Redis,
        producer: FeedbackProducer,
        metrics: FeedbackMetrics | None = None,
        tracer: trace.Tracer | None = None,
        evaluations: EvaluationEvents | None = None,
    ) -> None:
        self._config = config.feedback
        self._filter = config.guardrails.feedback_filter
        self._kafka = config.kafka
        self._keys = Keys(config.redis.key_prefix)
        self._redis = RoundTrips(redis)  # every Redis step of every call, coalesced per event-loop turn
        self._auth = Authenticator(config.auth)
        self.metrics = metrics or FeedbackMetrics()
        store = ResponseStore(redis, config.redis.key_prefix)
        self._records = RecordReader(store, self._redis, config.feedback.fresh_records, self.metrics)
        self._ledger = Ledger(
            self._redis, config.feedback.lease_s, config.feedback.idempotency_ttl_s, self._keys.epoch()
        )
        self._producer = producer
        producer.on_connect(BrokerLossGuard(config, self._redis, self._ledger, self.metrics))
        self._redis_loss = RedisLossGuard(config, self._redis, self._ledger, self.metrics, producer.topic)
        self._tracer = tracer or trace.get_tracer("trimtab.feedback")
        self._evaluations = evaluations or EvaluationEvents()
        self._background: set[asyncio.Task[None]] = set()
        self._redis_down = ThrottledWarning(log, WARN_EVERY_S)
        self._cohorts = Cohorts(config.feedback.cohorts, self.metrics)

    async def submit(
        self, request: feedback_pb2.SubmitRequest, credential: str | None, carrier: Iterable[tuple[str, str | bytes]]
    ) -> feedback_pb2.SubmitResponse:
        """Accept one submission or raise FeedbackError. `carrier`: the call's headers/metadata (trace context)."""
        context = context_from_grpc(list(carrier))
        return await self._submit_within(request, credential, context, trace.SpanKind.SERVER, self._cohorts)

    async def submit_batch(
        self,
        requests: Sequence[feedback_pb2.SubmitRequest],
        credential: str | None,
        carrier: Iterable[tuple[str, str | bytes]],
    ) -> list[feedback_pb2.SubmitResponse | FeedbackError]:
        """Each item as `submit` would answer it alone, in order. Raises FeedbackError only for the call
        as a whole: a missing or unknown key, no items or too many, a feedback_id twice in the batch."""
        with self._tracer.start_as_current_span(
            "feedback.SubmitBatch", context=context_from_grpc(list(carrier)), kind=trace.SpanKind.SERVER
        ) as span:
            span.set_attribute("trimtab.feedback.batch_items", len(requests))
            try:
                self._auth.principal(credential)  # a bad key fails the call, not each item
                _check_batch(requests, self._config.max_batch_items)
            except Unauthenticated as exc:
                raise self._refused_call(span, unauthenticated(str(exc))) from None
            except FeedbackError as error:
                raise self._refused_call(span, error) from None
            async with self._cohorts:
                return list(await asyncio.gather(*(self._item(request, credential) for request in requests)))

    async def _item(
        self, request: feedback_pb2.SubmitRequest, credential: str | None
    ) -> feedback_pb2.SubmitResponse | FeedbackError:
        try:
            return await self._submit_within(request, credential, None, trace.SpanKind.INTERNAL)
        except FeedbackError as error:
            return error
        except Exception:  # a bug: this item says so without details, the others go on
            log.exception("a SubmitBatch item failed unexpectedly")
            refusal = internal()
            self.refused(refusal)
            return refusal

    def _refused_call(self, span: trace.Span, error: FeedbackError) -> FeedbackError:
        span.set_status(trace.StatusCode.ERROR, error.message)
        self.refused(error)
        return error

    async def _submit_within(
        self,
        request: feedback_pb2.SubmitRequest,
        credential: str | None,
        context: Context | None,
        kind: trace.SpanKind,
        entry: AbstractAsyncContextManager[None] = _AT_ONCE,
    ) -> feedback_pb2.SubmitResponse:
        """The call in its span, entered through `entry`: a Submit's cohort (a batch's items are in the batch's)."""
        with self._tracer.start_as_current_span("feedback.Submit", context=context, kind=kind) as span:
            try:
                async with entry:
                    response = await self._submit(request, credential, span)
            except FeedbackError as error:
                span.set_status(trace.StatusCode.ERROR, error.message)
                span.set_attribute("rpc.grpc.status_code", error.code.value[0])
                self.refused(error)
                raise
            span.set_attribute("trimtab.feedback.replayed", response.replayed)
            self.metrics.accepted(kind_of(request), response.replayed)
            if not response.replayed:  # a retry's events went out with the original
                self._evaluations.accepted(request)
            return response

    def refused(self, error: FeedbackError) -> None:
        """Count a refusal (transports call this for requests that never reach `submit`, e.g. bad JSON)."""
        self.metrics.rejected(error.reason)

    async def _submit(
        self, request: feedback_pb2.SubmitRequest, credential: str | None, span: trace.Span
    ) -> feedback_pb2.SubmitResponse:
        try:
            principal = self._auth.principal(credential)
        except Unauthenticated as exc:
            raise unauthenticated(str(exc)) from None
        check_shape(request, self._config)
        span.set_attribute("trimtab.feedback.id", request.feedback_id)
        span.set_attribute("trimtab.feedback.kind", kind_of(request))
        span.set_attribute("trimtab.tenant", principal.tenant)
        digest = events.fingerprint(request, principal.tenant)
        judged = judged_responses(request)
        key = self._keys.submission(request.feedback_id)
        try:
            await self._redis_loss.known()
            first = await self._ledger.look(
                key, self._keys.key_rate(principal.key_name), self._config.key_rate, self._records.record_keys(judged)
            )
            if isinstance(first, Lost):
                raise self._redis_loss.lost()
            if isinstance(first, Limited):
                raise rate_limited("API key", first.retry_after_s)
            if isinstance(first, Existing):
                return await self._existing(key, first.entry, digest)
            return await self._new(key, request, principal, digest, span, judged, first)
        except RedisError as exc:
            self._redis_down.warning("Redis is unreachable (%s): submissions answer UNAVAILABLE until it is back", exc)
            raise unavailable(f"the response log (Redis) is unreachable: {exc}", retry_after_s=1) from exc

    async def _new(
        self,
        key: str,
        request: feedback_pb2.SubmitRequest,
        principal: Principal,
        digest: str,
        span: trace.Span,
        judged: dict[str, str],
        first: New,
    ) -> feedback_pb2.SubmitResponse:
        served = check_against_records(request, await self._records.read(judged, first.records), principal)
        _link_to_response(span, served)
        versions = {c.reply.model_version for c in served.candidates if c.reply.response_id in judged.values()}
        span.set_attribute("trimtab.version", sorted(versions))  # the version(s) whose output was judged
        template = events.template(request, served, new_id("fbk_"))
        try:
            partition = await self._producer.partition_for(served.request_id)
        except BrokerUnavailable as exc:
            raise unavailable(f"feedback not accepted: {exc}", retry_after_s=1) from exc
        admission = self._admission(request, served, principal, digest, template, partition)
        outcome = await self._ledger.reserve(key, admission)
        if isinstance(outcome, Lost):
            raise self._redis_loss.lost()
        if isinstance(outcome, Limited):
            raise rate_limited("user", outcome.retry_after_s)
        if isinstance(outcome, Existing):  # a concurrent call with the same feedback_id won the race
            return await self._existing(key, outcome.entry, digest)
        response = await self._write(key, outcome.entry, newly_admitted=True)
        if template.guardrails.violating_response_ids:
            use = training_label(template, self._filter).use
            self.metrics.rail_violation(kind_of(request), use.value)
            span.set_attribute("trimtab.guardrails.training_use", use.value)
        return response

    def _admission(
        self,
        request: feedback_pb2.SubmitRequest,
        served: events_pb2.ResponseLogged,
        principal: Principal,
        digest: str,
        template: events_pb2.FeedbackEvent,
        partition: int,
    ) -> Admission:
        tenant, user = principal.tenant, request.user_id
        target = vote_target(request)
        compared = polarity(request, served)
        return Admission(
            feedback_id=request.feedback_id,
            fingerprint=digest,
            event_id=template.event_id,
            template=template.SerializeToString(),
            partition=partition,
            floor_key=self._keys.floor(self._producer.topic, partition),
            user_rate_key=self._keys.user_rate(tenant, user),
            user_rate=self._config.user_rate,
            vote_key=self._keys.vote(tenant, user, target) if target else None,
            training_key=self._keys.training(tenant, user) if is_trainable(request) else None,
            training_window_s=self._config.training_cap.window_s,
            population_key=self._keys.population(compared[0]) if compared else None,
            polarity=compared[1] if compared else 0,
            user_field=f"{tenant}\x00{user}",
            agreement_key=self._keys.agreement(tenant, user),
            min_population_votes=self._config.agreement.min_population_votes,
            agreement_ttl_s=self._config.agreement.state_ttl_s,
        )

    async def _existing(self, key: str, entry: Entry | None, digest: str) -> feedback_pb2.SubmitResponse:
        """A feedback_id seen before: replay, conflict, wait for its owner, or recover it."""
        if entry is None:  # expired between two reads: the client may simply retry
            raise unavailable("the submission's state changed while it was read; retry", retry_after_s=1)
        if entry.fingerprint not in (digest, REBUILT):
            raise already_exists(
                f"feedback_id {entry.feedback_id!r} was already used for different feedback; use a new feedback_id"
            )
        deadline = time.monotonic() + self._config.in_progress_wait_s
        while entry.state != ACCEPTED and entry.lease_left_s > 0 and time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            entry = await self._ledger.get(key)
            if entry is None:
                raise unavailable("the submission's state changed while it was read; retry", retry_after_s=1)
        if entry.state == ACCEPTED:
            return self._response(entry, entry.partition, entry.offset or 0, replayed=True)
        if entry.lease_left_s > 0:
            raise unavailable(
                "a submission with this feedback_id is still being written; retry with the same feedback_id",
                retry_after_s=entry.lease_left_s,
            )
        return await self._recover(key, digest)

    async def _recover(self, key: str, digest: str) -> feedback_pb2.SubmitResponse:
        """Own an expired pending entry, then write its event unless the topic already has it."""
        won, entry = await self._ledger.take_over(key)
        if not won or entry is None:
            return await self._existing(key, entry, digest)
        with self._tracer.start_as_current_span("feedback.recover") as span:
            span.set_attribute("messaging.destination.partition.id", str(entry.partition))
            try:
                offset = await asyncio.to_thread(
                    find_event,
                    self._kafka,
                    self._producer.topic,
                    entry.partition,
                    entry.floor,
                    entry.event_id,
                    self._config.produce_timeout_s,
                )
            except (ScanTimeout, KafkaError) as exc:
                await self._ledger.release(key, entry.owner)
                raise unavailable(f"cannot check the feedback topic for an earlier write: {exc}", 1) from exc
            span.set_attribute("trimtab.feedback.found_on_topic", offset is not None)
        if offset is None:
            return await self._write(key, entry, newly_admitted=False)
        await self._ledger.accept(key, self._keys.partition(self._producer.topic, entry.partition), offset)
        return self._response(entry, entry.partition, offset, replayed=True)

    async def _write(self, key: str, entry: Entry, newly_admitted: bool) -> feedback_pb2.SubmitResponse:
        """Produce the entry's event, wait for the ack, record the acceptance."""
        send_by = time.monotonic() + entry.lease_left_s - 2 * self._config.produce_timeout_s - 1  # see the config
        event = events.finish(entry.template, entry.supersedes, entry.counts, self._config)
        if newly_admitted and event.abuse.user_flagged:
            await self._note_flagged(event)
        with self._tracer.start_as_current_span("feedback.produce", kind=trace.SpanKind.PRODUCER) as span:
            try:
                ack = await self._producer.send(event, event.served.request_id, entry.partition, None, send_by)
            except BrokerUnavailable as exc:
                await self._after_failed_send(key, entry, exc)
                # Handed over: the retry must wait out the lease, which started before the send.
                retry = max(1.0, entry.lease_left_s - self._config.produce_timeout_s) if exc.handed_over else 1.0
                raise unavailable(f"feedback not accepted: {exc}; retry with the same feedback_id", retry) from exc
            span.set_attribute("messaging.kafka.offset", ack.offset)
        if ack.offset < entry.floor:  # the partition's log ends below what was accepted: the broker lost some
            self._spawn(self._audit())
        self.metrics.produce_latency(ack.latency_s)
        await self._ledger.accept(key, self._keys.partition(ack.topic, ack.partition), ack.offset)
        return self._response(entry, ack.partition, ack.offset, replayed=False)

    async def _after_failed_send(self, key: str, entry: Entry, exc: BrokerUnavailable) -> None:
        if not exc.handed_over:  # never reached the producer: a retry may write it at once
            await self._ledger.release(key, entry.owner)
        elif exc.late_ack is not None:  # it may still be acked: record that if it happens
            exc.late_ack.add_done_callback(lambda done: self._late_ack(key, entry, done))

    def _late_ack(self, key: str, entry: Entry, done: asyncio.Future[Any]) -> None:
        if done.cancelled() or done.exception() is not None:
            return  # unknown outcome: the lease expires and a retry looks on the topic
        keys = self._keys.partition(self._producer.topic, entry.partition)
        self._spawn(self._ledger.accept(key, keys, int(done.result().offset)))

    async def _audit(self) -> None:
        try:
            await self._producer.audit()
        except BrokerUnavailable as exc:  # the next connection checks again
            log.error("checking the feedback topic against the ledger failed: %s", exc)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _note_flagged(self, event: events_pb2.FeedbackEvent) -> None:
        key = self._keys.flagged(event.served.tenant, event.user_id)
        if await self._redis.execute("SET", key, 1, "NX", "EX", self._config.agreement.state_ttl_s):
            self.metrics.user_flagged()

    def _response(self, entry: Entry, partition: int, offset: int, replayed: bool) -> feedback_pb2.SubmitResponse:
        return feedback_pb2.SubmitResponse(
            feedback_id=entry.feedback_id,
            event_id=entry.event_id,
            replayed=replayed,
            topic=self._producer.topic,
            partition=partition,
            offset=offset,
            supersedes=entry.supersedes,
        )

    async def drain(self) -> None:
        """Let background ledger updates finish."""
        if self._background:
            await asyncio.wait(self._background, timeout=self._config.drain_grace_s)


def batch_response(outcomes: list[feedback_pb2.SubmitResponse | FeedbackError]) -> feedback_pb2.SubmitBatchResponse:
    """One SubmitResult per item, in order (both transports answer with it)."""
    response = feedback_pb2.SubmitBatchResponse()
    for outcome in outcomes:
        if isinstance(outcome, FeedbackError):
            response.results.add(refused=outcome.refusal())
        else:
            response.results.add(accepted=outcome)
    return response


def _check_batch(requests: Sequence[feedback_pb2.SubmitRequest], max_items: int) -> None:
    if not requests:
        raise invalid("items", "at least one submission is required")
    if len(requests) > max_items:
        raise invalid(
            "items", f"at most {max_items} submissions per call (feedback.max_batch_items), got {len(requests)}"
        )
    seen: dict[str, int] = {}
    for index, request in enumerate(requests):
        if not request.feedback_id:  # each such item is refused alone (`feedback_id: required`)
            continue
        if request.feedback_id in seen:  # concurrent items with one id would each wait on the other
            # Not the id itself: it is not checked yet and may be far longer than a message should carry.
            raise invalid(f"items[{index}].feedback_id", f"the same as items[{seen[request.feedback_id]}]'s")
        seen[request.feedback_id] = index


def _link_to_response(span: trace.Span, served: events_pb2.ResponseLogged) -> None:
    """Link this span to the trace of the Generate call that produced the judged response."""
    if not served.trace_context:
        return
    context: Context = propagate.extract(dict(served.trace_context))
    linked = trace.get_current_span(context).get_span_context()
    if linked.is_valid:
        span.add_link(linked, {"trimtab.link": "judged_response"})
