"""The reward of served answers: a share of the answers serving gives, scored by a RewardService (a reward
model on another process or node), off the reply path. A quality signal per version that needs no gold
judge and no user: `trimtab.serving.served_reward_sum{version}` / `served_reward_scored{version}` is the
mean score of a version's scored answers.

Answers are picked by a stable hash of their response id (`serving.served_reward.share`), queue in a
bounded buffer (full: skipped and counted, never blocking a reply) and are scored in batches. Scoring
is best effort: a call that fails is counted by its status code and its answers are not retried.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

import grpc

from serving.metrics import ServingMetrics
from serving.recorder import Sink
from trimtab.config.reward_service import RewardServiceConfig, ServedRewardConfig
from trimtab.config.tls import TlsConfig
from trimtab.throttled import ThrottledWarning
from trimtab.tls import aio_grpc_channel
from trimtab.v1 import common_pb2, events_pb2, reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)
WARN_EVERY_S = 60.0


@dataclass(frozen=True)
class ServedAnswer:
    version: str
    prompt: common_pb2.Prompt
    text: str


def sampled(response_id: str, share: float) -> bool:
    """Whether the answer is scored: the same answer always gets the same verdict, on every replica."""
    return int.from_bytes(hashlib.sha256(response_id.encode()).digest()[:8], "big") / 2**64 < share


class ServedReward:
    def __init__(
        self, settings: ServedRewardConfig, service: RewardServiceConfig, meters: ServingMetrics, tls: TlsConfig
    ) -> None:
        assert settings.address is not None
        self._settings = settings
        self._batch = service.max_answers
        key = service.client_key
        self._metadata = (("authorization", f"Bearer {key.get_secret_value()}"),) if key else ()
        self._meters = meters
        self._channel = aio_grpc_channel(settings.address, tls)
        self._stub = reward_pb2_grpc.RewardServiceStub(self._channel)
        self._sink: Sink[ServedAnswer] = Sink(
            "served-reward", self._score, settings.max_pending, retry_s=1.0, on_drop=self._skipped
        )
        self._warnings = ThrottledWarning(log, WARN_EVERY_S)

    def start(self) -> None:
        self._sink.start()

    def offer(self, record: events_pb2.ResponseLogged) -> None:
        if record.prompt.WhichOneof("kind") != "chat":
            return  # a raw prompt: the reward model scores conversations
        for candidate in record.candidates:
            reply = candidate.reply
            if reply.text and sampled(reply.response_id, self._settings.share):
                self._sink.offer(ServedAnswer(reply.model_version, record.prompt, reply.text))

    async def close(self, timeout_s: float) -> None:
        await self._sink.drain(timeout_s)
        await self._channel.close()

    async def _score(self, answers: list[ServedAnswer]) -> None:
        for start in range(0, len(answers), self._batch):
            await self._score_batch(answers[start : start + self._batch])

    async def _score_batch(self, answers: list[ServedAnswer]) -> None:
        request = reward_pb2.ScoreRequest(
            answers=[reward_pb2.ScoredAnswer(prompt=a.prompt, response=a.text) for a in answers]
        )
        try:
            response = await self._stub.Score(request, timeout=self._settings.timeout_s, metadata=self._metadata)
            scores = list(response.scores)
            if len(scores) != len(answers):
                raise ValueError(f"{len(scores)} scores for {len(answers)} answers")
        except Exception as exc:  # best effort: counted, never retried, never raised into the sink
            code = exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__
            self._meters.served_reward_failures.add(len(answers), {"code": code})
            self._warnings.warning("reward of served answers: Score failed (%s: %s)", code, exc)
            return
        for answer, score in zip(answers, scores, strict=True):
            self._meters.served_reward_sum.add(score, {"version": answer.version})
            self._meters.served_reward_scored.add(1, {"version": answer.version})

    def _skipped(self) -> None:
        self._meters.served_reward_failures.add(1, {"code": "BUFFER_FULL"})
