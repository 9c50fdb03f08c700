"""Simulated users on the real endpoints: each interaction picks a user of the synthetic world's
population and a training prompt, calls InferenceService.Generate (two candidates for a pairwise
judgement, one otherwise), scores the answers with the world's gold reward, and submits the user's
feedback to FeedbackService.Submit.

Interactions start at the configured rate, at most `concurrency` at a time (when serving is slower, the
rate falls rather than a queue growing). Every choice comes from a `random.Random` seeded by the
interaction's index, so a run's users, prompts and labels do not depend on timing. Any Generate error is
a failed request. A submission is sent the moment the answer arrives and retried with the same
feedback_id (exactly once: a retry can never count twice) on UNAVAILABLE (which is also the answer while
a just-served response's record has not landed) and RESOURCE_EXHAUSTED, honouring `retry-after`, for
`submit_retry_s`; only then does it count as failed. NOT_FOUND is final: the response is unknown.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import grpc

from trimtab.app.demo.records import Answer, Clock, Interaction
from trimtab.config.demo import DemoUsersConfig, FeedbackKind
from trimtab.simulation.world import GoldScore, Population, Preference, Prompt, SimulatedUser, Split, World
from trimtab.v1 import common_pb2, feedback_pb2, feedback_pb2_grpc, inference_pb2, inference_pb2_grpc

RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED}
FIRST_BACKOFF_S = 0.05
MAX_BACKOFF_S = 1.0


@dataclass(frozen=True)
class Judgement:
    """What a user says about the answers: the label, the response it is about ("" for a pair), and the
    thumb given (thumb judgements only)."""

    label: feedback_pb2.FeedbackLabel
    response_id: str
    thumbs_up: bool | None = None


def judge(
    kind: FeedbackKind,
    user: SimulatedUser,
    prompt: Prompt,
    response_ids: Sequence[str],
    scores: Sequence[GoldScore],
    world: World,
    rng: random.Random,
) -> Judgement:
    """The user's feedback of `kind` on the answers (two for pairwise, else the first)."""
    Label = feedback_pb2.FeedbackLabel
    first, score = response_ids[0], scores[0]
    match kind:
        case "pairwise":
            choice = user.prefer(scores[0], scores[1], rng)
            chosen, rejected = response_ids if choice is not Preference.B else tuple(reversed(response_ids))
            pair = feedback_pb2.Pairwise(chosen_response_id=chosen, rejected_response_id=rejected)
            pair.tie = choice is Preference.TIE
            return Judgement(Label(pairwise=pair), "")
        case "thumb":
            up = user.thumb(score, rng)
            return Judgement(Label(thumb=feedback_pb2.THUMB_UP if up else feedback_pb2.THUMB_DOWN), first, up)
        case "rating":
            return Judgement(Label(rating=user.rate(score, rng)), first)
        case "attributes":
            attributes = common_pb2.SteerLMAttributes(**user.attribute_scores(score, rng).as_dict())
            return Judgement(Label(attributes=attributes), first)
        case "correction":
            return Judgement(Label(correction=user.correction(prompt, world, rng)), first)
    raise ValueError(f"unknown feedback kind {kind!r}")


class SimulatedUsers:
    """A population of simulated users sending traffic to one serving tier and one feedback service."""

    def __init__(
        self,
        config: DemoUsersConfig,
        world: World,
        serving_address: str,
        feedback_address: str,
        clock: Clock,
    ) -> None:
        self.config = config
        self.world = world
        population = world.config.users.model_copy(
            update={"adversarial_share": config.adversarial_share, "noise": config.noise}
        )
        self.population = Population.build(population, world.config.seed)
        self.serving_address = serving_address
        self.feedback_address = feedback_address
        self.clock = clock
        weights = config.mix.weights()
        self._kinds = [kind for kind, weight in weights.items() if weight > 0]
        self._weights = [weights[kind] for kind in self._kinds]

    async def run(self, stop: asyncio.Event, record: Callable[[Interaction], None]) -> int:
        """Interact until `duration_s` has passed or `stop` is set, then let the interactions in flight
        finish; `record` gets each finished interaction. Returns the number started."""
        async with (
            grpc.aio.insecure_channel(self.serving_address) as serving,
            grpc.aio.insecure_channel(self.feedback_address) as feedback,
        ):
            calls = _Calls(
                inference_pb2_grpc.InferenceServiceStub(serving), feedback_pb2_grpc.FeedbackServiceStub(feedback)
            )
            slots = asyncio.Semaphore(self.config.concurrency)
            running: set[asyncio.Task[Interaction]] = set()
            crashed: list[BaseException] = []
            loop = asyncio.get_running_loop()
            end = loop.time() + self.config.duration_s
            next_start = loop.time()
            index = 0
            while not stop.is_set() and loop.time() < end:
                await _sleep_unless(stop, min(next_start, end) - loop.time())
                if stop.is_set() or loop.time() >= end:
                    break
                await slots.acquire()
                task = asyncio.create_task(self.interact(index, calls))
                running.add(task)
                task.add_done_callback(lambda done: _finished(done, running, slots, record, stop, crashed))
                index += 1
                next_start = max(next_start + 1.0 / self.config.rate, loop.time())  # never burst to catch up
            if running:
                await asyncio.wait(running)
            if crashed:  # a bug in the simulation, not a failed request
                raise crashed[0]
            return index

    async def interact(self, index: int, calls: _Calls) -> Interaction:
        """One user, one prompt, one Generate, one Submit."""
        rng = random.Random(f"{self.config.seed}:interaction:{index}")
        user = self.population.pick(rng)
        kind: FeedbackKind = rng.choices(self._kinds, weights=self._weights)[0]
        prompt = self.world.sample_prompt(rng, Split.TRAIN)
        request = inference_pb2.GenerateRequest(
            user_id=user.user_id,
            n=2 if kind == "pairwise" else 1,
            sampling=common_pb2.SamplingParams(
                temperature=self.config.temperature, max_tokens=self.config.max_tokens, seed=rng.randrange(2**31)
            ),
        )
        request.prompt.chat.messages.add(role="user", content=prompt.text)
        base = Interaction(index, self.clock.now(), kind, user.user_id, user.adversarial)
        started = time.monotonic()
        try:
            reply = await calls.inference.Generate(request, timeout=self.config.rpc_timeout_s)
        except grpc.aio.AioRpcError as exc:
            return _with(base, error=f"Generate {_describe(exc)}")
        latency = time.monotonic() - started
        scores = [self.world.score_prompt(prompt, candidate.text) for candidate in reply.candidates]
        answers = tuple(_answer(candidate, score) for candidate, score in zip(reply.candidates, scores, strict=True))
        if len(answers) != request.n:
            return _with(base, latency_s=latency, answers=answers, error=f"Generate: {len(answers)} candidates")
        judgement = judge(kind, user, prompt, [a.response_id for a in answers], scores, self.world, rng)
        served = _with(base, latency_s=latency, answers=answers, thumbs_up=judgement.thumbs_up)
        submission = feedback_pb2.SubmitRequest(
            feedback_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            user_id=user.user_id,
            response_id=judgement.response_id,
            label=judgement.label,
        )
        return await self._submit(calls, submission, served)

    async def _submit(self, calls: _Calls, submission: feedback_pb2.SubmitRequest, served: Interaction) -> Interaction:
        started = time.monotonic()
        deadline = started + self.config.submit_retry_s
        retries, backoff = 0, FIRST_BACKOFF_S
        served = _with(served, feedback_id=submission.feedback_id)
        while True:
            try:
                reply = await calls.feedback.Submit(submission, timeout=self.config.rpc_timeout_s)
                return _with(
                    served,
                    accepted=True,
                    feedback_id=reply.feedback_id or submission.feedback_id,
                    accepted_at_s=self.clock.now(),
                    submit_latency_s=time.monotonic() - started,
                    retries=retries,
                )
            except grpc.aio.AioRpcError as exc:
                wait = _retry_after(exc) or backoff
                if exc.code() not in RETRYABLE or time.monotonic() + wait > deadline:
                    return _with(served, retries=retries, error=f"Submit {_describe(exc)}")
            retries += 1
            await asyncio.sleep(wait)
            backoff = min(2 * backoff, MAX_BACKOFF_S)


@dataclass(frozen=True)
class _Calls:
    inference: inference_pb2_grpc.InferenceServiceStub
    feedback: feedback_pb2_grpc.FeedbackServiceStub


def _answer(candidate: inference_pb2.Candidate, score: GoldScore) -> Answer:
    spans = tuple(dict.fromkeys(span.version_id for span in candidate.version_spans)) or (candidate.model_version,)
    return Answer(candidate.response_id, candidate.model_version, spans, score.reward, score.well_formed, score.unsafe)


def _with(interaction: Interaction, **changes: Any) -> Interaction:
    return replace(interaction, **changes)


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _retry_after(exc: grpc.aio.AioRpcError) -> float | None:
    for key, value in exc.trailing_metadata() or ():
        if key == "retry-after":
            try:
                return max(0.0, float(value))
            except (TypeError, ValueError):
                return None
    return None


async def _sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    if seconds > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)


def _finished(
    task: asyncio.Task[Interaction],
    running: set[asyncio.Task[Interaction]],
    slots: asyncio.Semaphore,
    record: Callable[[Interaction], None],
    stop: asyncio.Event,
    crashed: list[BaseException],
) -> None:
    running.discard(task)
    slots.release()
    if task.cancelled():
        return
    if (exc := task.exception()) is not None:
        crashed.append(exc)
        stop.set()
        return
    record(task.result())
