"""Serving one generation request, whatever the transport: admit it (validate, input rails, an in-flight
slot, a route), run each candidate through the engine (collected, or streamed as chunks), release it
(its record queued for the response log, off the reply path).

The gRPC InferenceService (serving/inference.py) and the OpenAI API (serving/openai/) are two faces
of this one path, so a request gets the same validation, guardrails, canary routing, version spans,
response record and metrics whichever way it came; each face only translates its wire format and
maps a `Refused` to its own status.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace

from guardrails.decisions import Decision, merge
from guardrails.service import LiveGuardrails
from serving import genai
from serving.guarded import OutputGuard, check_prompt, last_user_text
from serving.metrics import ServingMetrics
from serving.protocol import Engine, EngineRequest, EngineStopped, VersionSpan
from serving.recorder import ResponseRecorder
from serving.requests import InvalidArgument, ValidRequest, validate
from serving.routing import Router, Served
from serving.versions import ZERO_ADAPTER
from trimtab.auth import ANONYMOUS, Principal
from trimtab.config import ServingConfig
from trimtab.ids import RESPONSE_ID_PREFIX, new_id
from trimtab.telemetry import trace_fields
from trimtab.v1 import common_pb2, events_pb2, inference_pb2

tracer = trace.get_tracer("trimtab.serving")
log = logging.getLogger(__name__)
FINISH_REASONS = {
    "stop": inference_pb2.FINISH_REASON_STOP,
    "length": inference_pb2.FINISH_REASON_LENGTH,
    "abort": inference_pb2.FINISH_REASON_ABORT,
    "blocked": inference_pb2.FINISH_REASON_BLOCKED,
}


class Refused(Exception):
    """The request is not served: a gRPC status, its message, and the request field at fault if one is."""

    def __init__(self, code: grpc.StatusCode, message: str, field: str | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field
        self.reason = reason  # for a field: what is wrong with it, without the field's name


@dataclass(frozen=True)
class Options:
    """What a face may ask beyond the GenerateRequest."""

    top_logprobs: int = 0  # per token, also the likeliest tokens there (OpenAI's top_logprobs)
    version: str | None = None  # serve this version (current or canary) instead of the user's route


@dataclass
class CandidateRun:
    """One candidate as it is generated: what the client gets and what the response log keeps."""

    index: int
    response_id: str
    served: Served
    prompt_tokens: int
    text: list[str] = field(default_factory=list)
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[Sequence[tuple[int, float]]] = field(default_factory=list)  # with Options.top_logprobs
    finish_reason: str | None = None
    spans: list[inference_pb2.VersionSpan] = field(default_factory=list)
    shown: str | None = None  # the text the client got, when a guardrail changed or replaced it
    decisions: list[Decision] = field(default_factory=list)  # input rails', then output rails'

    @property
    def answer(self) -> str:
        return "".join(self.text) if self.shown is None else self.shown

    def candidate(self) -> inference_pb2.Candidate:
        return inference_pb2.Candidate(
            index=self.index,
            response_id=self.response_id,
            text=self.answer,
            model_version=self.served.version,
            version_spans=self.spans,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=len(self.token_ids),
            finish_reason=FINISH_REASONS.get(self.finish_reason or "", inference_pb2.FINISH_REASON_UNSPECIFIED),
            guardrails=[decision.to_proto() for decision in self.decisions],
        )


@dataclass
class Job:
    """A validated request on its way through the engine."""

    request_id: str
    request: inference_pb2.GenerateRequest
    valid: ValidRequest
    served: Served
    received_at: Timestamp
    runs: list[CandidateRun]
    tenant: str
    options: Options
    telemetry: genai.Attributes  # the request's GenAI attributes (the span's, and the metrics' base)
    admitted_at: float = field(default_factory=time.perf_counter)
    guarded: bool = False  # the guardrails check this request (enabled, and for its tenant)
    refusal: str | None = None  # an input rail blocked the prompt: every candidate is this answer


@dataclass(frozen=True)
class Chunk:
    """New output of one candidate on a stream. `tokens_end`: how many of the candidate's tokens the text
    so far covers; None while a guarded stream holds text back (its tokens are accounted for at the end)."""

    run: CandidateRun
    text: str
    final: bool
    tokens_end: int | None


Chunks: TypeAlias = asyncio.Queue[Chunk | None]


def version_spans(served: Served, engine_spans: Sequence[VersionSpan]) -> list[inference_pb2.VersionSpan]:
    """Who produced which tokens. The engine labels tokens with its base weights' version; tokens of a
    LoRA version carry the adapter's id while the engine runs the base it was trained on, and
    `adapter@base` while it runs another (a base swapped under an in-flight adapter request)."""
    spans = []
    for span in engine_spans:
        label = span.version
        if served.adapter is not None and served.adapter != ZERO_ADAPTER:
            label = served.version if span.version == served.base else f"{served.version}@{span.version}"
        spans.append(inference_pb2.VersionSpan(version_id=label, token_start=span.start, token_end=span.end))
    return spans


class Generation:
    """The request path shared by every face of `trimtab serve`."""

    def __init__(
        self,
        engine: Engine,
        config: ServingConfig,
        router: Router,
        recorder: ResponseRecorder,
        meters: ServingMetrics,
        rails: LiveGuardrails | None = None,
        on_engine_stopped: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.router = router
        self._on_engine_stopped = on_engine_stopped
        self._rails = rails  # None: guardrails off, and no rail code runs
        self._config = config
        self._recorder = recorder
        self._meters = meters
        self._inflight = 0

    @contextlib.asynccontextmanager
    async def admitted(
        self, request: inference_pb2.GenerateRequest, principal: Principal, options: Options = Options()
    ) -> AsyncIterator[Job]:
        """The admitted job, released (and its record queued) when the block ends; Refused otherwise.
        The block runs inside the request's GenAI span (`chat trimtab`), the parent of every span of it."""
        attributes = genai.request_attributes(request, options.version or self._config.openai.model_name)
        with tracer.start_as_current_span(genai.span_name(attributes), attributes=attributes) as span:
            job = await self._admit(request, principal, options, attributes)
            try:
                yield job
            finally:
                self._release(job)
                span.set_attributes(
                    genai.response_attributes(
                        request_id=job.request_id,
                        version=job.served.version,
                        finish_reasons=[run.finish_reason or "" for run in job.runs],
                        input_tokens=len(job.valid.prompt_token_ids),
                        output_tokens=sum(len(run.token_ids) for run in job.runs),
                    )
                )

    async def complete(self, job: Job) -> None:
        """Generate every candidate to its end."""
        try:
            await asyncio.gather(*(self._drain(job, run) for run in job.runs))
        except EngineStopped as exc:
            raise self._engine_stopped(exc) from exc

    async def stream(self, job: Job) -> AsyncGenerator[Chunk, None]:
        """Generate every candidate, yielding their chunks as they come. Leaving early (a client that went
        away) aborts the candidates inside the engine."""
        chunks: Chunks = asyncio.Queue()
        tasks = [asyncio.create_task(self._drain(job, run, chunks)) for run in job.runs]
        try:
            finished = 0
            while finished < len(tasks):  # each candidate task puts None when it ends
                chunk = await chunks.get()
                if chunk is None:
                    finished += 1
                else:
                    yield chunk
            await asyncio.gather(*tasks)  # surfaces a candidate's failure
        except EngineStopped as exc:
            raise self._engine_stopped(exc) from exc
        finally:
            for task in tasks:
                task.cancel()

    def _engine_stopped(self, exc: EngineStopped) -> Refused:
        """UNAVAILABLE (retry elsewhere), and the server told to stop: a replica whose engine died serves
        nothing any more, and its exit lets a supervisor start a fresh one."""
        log.error("the inference engine stopped: %s", exc)
        self._meters.requests.add(1, {"outcome": "engine_stopped"})
        self._on_engine_stopped()
        return Refused(
            grpc.StatusCode.UNAVAILABLE,
            "the inference engine stopped (see the server log); this replica is shutting down: retry on another",
        )

    async def _admit(
        self,
        request: inference_pb2.GenerateRequest,
        principal: Principal,
        options: Options,
        telemetry: genai.Attributes,
    ) -> Job:
        """Validate, run the input rails, take an in-flight slot and route. A prompt a rail refuses is still
        admitted: its answer is the refusal."""
        if request.tenant and request.tenant != principal.tenant and principal.key_name != ANONYMOUS:
            reason = f"this API key acts for {principal.tenant!r}"
            raise Refused(grpc.StatusCode.PERMISSION_DENIED, f"tenant: {reason}", field="tenant", reason=reason)
        if options.version is not None and options.version not in self.router.servable():
            servable = ", ".join(self.router.servable())
            raise Refused(
                grpc.StatusCode.NOT_FOUND,
                f"version {options.version!r} is not served by this replica (servable: {servable})",
                field="version",
            )
        valid = self._validate(request)
        tenant = request.tenant or principal.tenant
        verdict = None
        if self._rails is not None and self._rails.applies_to(tenant):
            verdict = await check_prompt(self._rails, request)
            if verdict.modified:  # the engine sees the masked prompt: render it again
                request, valid = verdict.request, self._validate(verdict.request, after="the input guardrails")
        if self._inflight >= self._config.max_inflight:
            self._meters.requests.add(1, {"outcome": "resource_exhausted"})
            raise Refused(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"{self._inflight} requests in flight, the limit (serving.max_inflight); retry later",
            )
        # A pinned version may have been retired while the rails ran: check again, with no await before routing.
        if options.version is not None and options.version not in self.router.servable():
            raise Refused(grpc.StatusCode.NOT_FOUND, f"version {options.version!r} was retired meanwhile")
        self._inflight += 1
        self._meters.inflight.add(1)
        served = self.router.route(request.user_id, options.version)
        self.router.admit(served)
        received_at = Timestamp()
        received_at.GetCurrentTime()
        prompt_tokens = len(valid.prompt_token_ids)
        runs = [CandidateRun(i, new_id(RESPONSE_ID_PREFIX), served, prompt_tokens) for i in range(valid.n)]
        trace.get_current_span().set_attribute("trimtab.version", served.version)
        job = Job(new_id("req_"), request, valid, served, received_at, runs, tenant, options, telemetry)
        if verdict is not None:
            job.guarded, job.refusal = True, verdict.refusal
            for run in runs:
                run.decisions.extend(verdict.decisions)
        return job

    def _validate(self, request: inference_pb2.GenerateRequest, after: str = "") -> ValidRequest:
        try:
            return validate(request, self._config, self.engine.render_chat, self.engine.encode)
        except InvalidArgument as exc:  # after a mask: the masked prompt is too long, say so as for any prompt
            self._meters.requests.add(1, {"outcome": "invalid_argument"})
            message = f"after {after}: {exc}" if after else str(exc)
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, message, field=exc.field, reason=exc.reason) from None

    def _release(self, job: Job) -> None:
        self.router.release(job.served)
        self._inflight -= 1
        self._meters.inflight.add(-1)
        cancelled = [run for run in job.runs if not run.finish_reason]
        for run in cancelled:  # the client left or its deadline passed: vLLM aborted these
            run.finish_reason = "abort"
        with tracer.start_as_current_span("record", attributes={"trimtab.request_id": job.request_id}):
            self._recorder.record(self._record(job))  # queued: the writes happen off the reply path
        outcome = "cancelled" if cancelled else "ok"
        self._meters.requests.add(1, {"outcome": outcome, "version": job.served.version})
        error = "cancelled" if cancelled else None
        self._meters.request_duration.record(
            time.perf_counter() - job.admitted_at, genai.metric_attributes(job.telemetry, job.served.version, error)
        )

    async def _drain(self, job: Job, run: CandidateRun, chunks: Chunks | None = None) -> None:
        """Run one candidate through the engine, collecting it (and streaming chunks when asked)."""
        if job.refusal is not None:  # an input rail blocked the prompt: answer without generating
            run.shown, run.finish_reason = job.refusal, "blocked"
            _emit(run, chunks, job.refusal, final=True)
            if chunks is not None:
                chunks.put_nowait(None)
            return
        sampling = job.valid.sampling
        if sampling.seed is not None:  # distinct but reproducible candidates
            sampling = dataclasses.replace(sampling, seed=sampling.seed + run.index)
        engine_request = EngineRequest(
            run.response_id,
            job.valid.prompt_token_ids,
            sampling,
            job.served.adapter,
            stream=chunks is not None,
            top_logprobs=job.options.top_logprobs,
        )
        attributes = {"trimtab.version": job.served.version, "trimtab.response_id": run.response_id}
        with tracer.start_as_current_span("generate", attributes=attributes) as span:
            await self._generate(job, run, engine_request, chunks)
            span.set_attribute("trimtab.completion_tokens", len(run.token_ids))

    async def _generate(
        self, job: Job, run: CandidateRun, engine_request: EngineRequest, chunks: Chunks | None
    ) -> None:
        guard = None
        if job.guarded and self._rails is not None:
            guard = OutputGuard(self._rails, last_user_text(job.request), streaming=chunks is not None)
        started = time.perf_counter()
        first_at = started
        measured = genai.metric_attributes(job.telemetry, job.served.version)
        try:
            # aclosing: leaving the loop early (a stream a rail blocked) aborts the request inside the engine.
            async with contextlib.aclosing(self.engine.generate(engine_request)) as deltas:
                async for delta in deltas:
                    if not run.token_ids:  # a unary call's one delta comes at the end: the engine timed its first token
                        ttft = time.perf_counter() - started if delta.first_token_s is None else delta.first_token_s
                        self._meters.time_to_first_token.record(ttft, measured)
                        first_at = started + ttft
                    run.text.append(delta.text)
                    run.token_ids.extend(delta.token_ids)
                    run.logprobs.extend(delta.logprobs)
                    run.top_logprobs.extend(delta.top_logprobs)
                    if delta.finish_reason:
                        run.finish_reason = delta.finish_reason
                        run.spans = version_spans(job.served, delta.version_spans)
                    if guard is None:
                        _emit(run, chunks, delta.text, final=run.finish_reason is not None)
                        continue
                    _emit(run, chunks, await guard.push(delta.text), final=False, held=True)
                    if guard.blocked:
                        break
            if guard is not None:
                await _finish_guarded(job, run, guard, chunks)
            self._meters.tokens.add(len(run.token_ids), {"version": job.served.version})
            if len(run.token_ids) > 1 and run.finish_reason in ("stop", "length"):  # the conventions: successes
                per_token = (time.perf_counter() - first_at) / (len(run.token_ids) - 1)
                self._meters.time_per_output_token.record(per_token, measured)
        finally:
            if chunks is not None:
                chunks.put_nowait(None)

    def _record(self, job: Job) -> events_pb2.ResponseLogged:
        completed_at = Timestamp()
        completed_at.GetCurrentTime()
        sampling = job.valid.sampling
        record = events_pb2.ResponseLogged(
            request_id=job.request_id,
            tenant=job.tenant,
            user_id=job.request.user_id,
            prompt_token_ids=job.valid.prompt_token_ids,
            sampling=common_pb2.SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=sampling.top_k,
                max_tokens=sampling.max_tokens,
                stop=sampling.stop,
                seed=sampling.seed,
            ),
            steer_targets=job.request.steer_targets,
            received_at=job.received_at,
            completed_at=completed_at,
            trace_context=trace_fields(),  # lets spans about this response (feedback) link to its trace
        )
        if job.valid.messages is not None:
            record.prompt.chat.messages.extend(common_pb2.ChatMessage(**m) for m in job.valid.messages)
        else:
            record.prompt.text = job.request.prompt.text
        for run in job.runs:
            record.candidates.add(reply=run.candidate(), token_ids=run.token_ids, token_logprobs=run.logprobs)
        return record


async def _finish_guarded(job: Job, run: CandidateRun, guard: OutputGuard, chunks: Chunks | None) -> None:
    """Apply the output rails' outcome to the candidate and send what the stream still owes."""
    outcome = await guard.finish("".join(run.text))
    run.shown = outcome.shown
    run.decisions = merge([*run.decisions, *outcome.decisions])
    if outcome.blocked:
        run.finish_reason = "blocked"
        if not run.spans and run.token_ids:  # stopped before the engine's last delta labelled the tokens
            run.spans = [
                inference_pb2.VersionSpan(version_id=job.served.version, token_start=0, token_end=len(run.token_ids))
            ]
    _emit(run, chunks, outcome.tail, final=True)


def _emit(run: CandidateRun, chunks: Chunks | None, text: str, final: bool, held: bool = False) -> None:
    """Queue one stream chunk (nothing for unary calls, or when there is nothing to say). `held`: text a
    guard released, which no longer lines up with the tokens generated so far."""
    if chunks is None or not (text or final):
        return
    tokens_end = None if held and not final else len(run.token_ids)
    chunks.put_nowait(Chunk(run, text, final, tokens_end))
