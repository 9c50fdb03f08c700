"""`trimtab reward`: a reward model (a `reward` version of the registry) behind RewardService.Score, for
a learner on another node (`--reward grpc://HOST:PORT`) and for serving's reward of served answers.

grpc.aio with health checking, reflection and the shared API-key authentication; scoring runs off the
event loop, one batch at a time (the model is one set of weights); on SIGTERM or SIGINT health goes
NOT_SERVING and calls in flight get `reward_service.drain_grace_s` to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from learner.rewards import RewardError, RewardModel, reward_model_dir
from trimtab.auth import Authenticator, Unauthenticated, credential
from trimtab.config import TrimtabConfig
from trimtab.config.reward_service import RewardServiceConfig
from trimtab.grpc_handlers import handlers_for
from trimtab.heap import freeze_startup_heap
from trimtab.jsonl import Messages
from trimtab.registry import Registry
from trimtab.telemetry import setup_telemetry
from trimtab.tls import add_grpc_port
from trimtab.v1 import reward_pb2, reward_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAME = reward_pb2.DESCRIPTOR.services_by_name["RewardService"].full_name


class RewardServicer(reward_pb2_grpc.RewardServiceServicer):
    def __init__(self, model: RewardModel, version: str, settings: RewardServiceConfig, auth: Authenticator) -> None:
        self._model = model
        self._version = version
        self._settings = settings
        self._auth = auth
        self._lock = asyncio.Lock()  # one forward at a time: concurrent batches would only contend

    async def Score(
        self, request: reward_pb2.ScoreRequest, context: grpc.aio.ServicerContext
    ) -> reward_pb2.ScoreResponse:
        try:
            self._auth.principal(credential(context.invocation_metadata() or ()))
        except Unauthenticated as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
        problem = invalid(request, self._settings)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        prompts: list[Messages] = [
            [{"role": m.role, "content": m.content} for m in answer.prompt.chat.messages] for answer in request.answers
        ]
        responses = [answer.response for answer in request.answers]
        async with self._lock:
            scores = await asyncio.to_thread(self._model, prompts, responses)
        return reward_pb2.ScoreResponse(scores=scores, reward_version=self._version)


def invalid(request: reward_pb2.ScoreRequest, settings: RewardServiceConfig) -> str | None:
    """What is wrong with `request` (naming the answer and the field), or None."""
    if not request.answers:
        return "answers: at least one answer to score is required"
    if len(request.answers) > settings.max_answers:
        return f"answers: {len(request.answers)} answers, over reward_service.max_answers = {settings.max_answers}"
    for i, answer in enumerate(request.answers):
        if answer.prompt.WhichOneof("kind") != "chat" or not answer.prompt.chat.messages:
            return f"answers[{i}].prompt: a chat of at least one message is required (the model scores conversations)"
        size = len(answer.response) + sum(len(m.content) for m in answer.prompt.chat.messages)
        if size > settings.max_chars:
            return f"answers[{i}]: {size} characters, over reward_service.max_chars = {settings.max_chars}"
    return None


@dataclass
class RunningRewardService:
    port: int
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    drain_grace_s: float

    async def stop(self) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.drain_grace_s)


async def start_reward_service(config: TrimtabConfig, version: str) -> RunningRewardService:
    """Load `version` (RewardError if it is no reward model) and serve it; SERVING once bound."""
    settings = config.reward_service
    model_dir = reward_model_dir(Registry(config.registry.root), version, "reward_service.version")
    model = await asyncio.to_thread(RewardModel, model_dir, settings.batch_size)
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])  # a taken port must fail, not be shared
    servicer = RewardServicer(model, version, settings, Authenticator(config.auth))
    server.add_generic_rpc_handlers([handlers_for(reward_pb2.DESCRIPTOR.services_by_name["RewardService"], servicer)])
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = add_grpc_port(server, address, config.tls)
    except RuntimeError as exc:
        raise RewardError(f"cannot bind RewardService to {address}: address in use or not available") from exc
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningRewardService(port, server, health_servicer, settings.drain_grace_s)


async def serve(config: TrimtabConfig, version: str) -> None:
    telemetry = setup_telemetry(config.telemetry, "reward", config.tls)
    running = await start_reward_service(config, version)
    freeze_startup_heap()
    log.info("serving reward model %s on %s:%d", version, config.reward_service.host, running.port)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    telemetry.shutdown()


def run(config: TrimtabConfig, version: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(config, version))
    return 0
