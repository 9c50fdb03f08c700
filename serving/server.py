"""`trimtab serve`: the grpc.aio server with health checking, reflection and a graceful drain.

Lifecycle: resolve the version to serve (the registry's `current`, else model.path imported as the
first version) -> start the engine on it and warm it up (serving/warmup.py) -> start the response
recorder and the pointer follower -> bind gRPC and the OpenAI API's HTTP port, mark SERVING -> on
SIGTERM or SIGINT mark NOT_SERVING (load balancers stop sending), let in-flight requests on both finish
within serving.drain_grace_s, flush buffered records, stop the engine. The whole stop has a deadline
(serving.shutdown_timeout_s after the drain's grace; `serving/shutdown.py`): past it, or on a second
signal, the process exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from guardrails.metrics import GuardrailMetrics
from guardrails.service import LiveGuardrails
from serving.admin import AdminServicer, version_event
from serving.generation import Generation
from serving.grpc_options import ADMIN_SERVICE, GRPC_OPTIONS, INFERENCE_SERVICE, SERVICE_NAMES
from serving.inference import InferenceServicer
from serving.metrics import ServingMetrics
from serving.openai.api import OpenAIApi
from serving.openai.feedback import FeedbackForwarder
from serving.protocol import EngineStopped
from serving.recorder import ResponseRecorder
from serving.served_reward import ServedReward
from serving.shutdown import StopDeadline
from serving.versions import ZERO_ADAPTER, VersionManager, initial_version
from serving.warmup import warm_up
from serving.weights import tensor_specs, write_zero_adapter
from trimtab.auth import Authenticator
from trimtab.config import TrimtabConfig
from trimtab.grpc_handlers import handlers_for
from trimtab.heap import freeze_startup_heap
from trimtab.records import redis_client
from trimtab.registry import PointerStore, Registry
from trimtab.suite import load_suite
from trimtab.telemetry import setup_telemetry
from trimtab.tls import add_grpc_port, server_ssl_context

if TYPE_CHECKING:
    from serving.vllm_engine import VllmEngine

log = logging.getLogger(__name__)


@dataclass
class RunningServer:
    """A started server: its bound port and the handles `stop()` needs."""

    port: int
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    engine: VllmEngine
    recorder: ResponseRecorder
    follower: asyncio.Task[None]
    manager: VersionManager
    drain_grace_s: float
    engine_stopped: asyncio.Event  # set when the engine died: the server should stop (and exit non-zero)
    rails: LiveGuardrails | None = None
    served_reward: ServedReward | None = None
    openai: OpenAIHttp | None = None

    async def stop(self, step: Callable[[str], None] = lambda name: None) -> None:
        """`step` hears the name of each step as it begins (the stop's deadline names the one it hangs in)."""
        step("marking health NOT_SERVING")
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # New requests refused on both faces; in-flight ones get the grace period.
        step("draining in-flight requests (gRPC and the OpenAI API)")
        draining = [self.server.stop(self.drain_grace_s)]
        if self.openai is not None:
            draining.append(self.openai.stop())
        await asyncio.gather(*draining)
        step("stopping the pointer follower")
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.follower
        step("flushing the response log (Redis, Kafka)")
        await self.recorder.close(timeout_s=5.0)
        if self.served_reward is not None:
            step("flushing the reward of served answers")
            await self.served_reward.close(timeout_s=5.0)
        if self.rails is not None:
            step("closing the guardrails")
            await self.rails.close()
        step("shutting the engine down")
        self.engine.shutdown()


@dataclass
class OpenAIHttp:
    """The OpenAI API's HTTP server: its bound port and what stopping it needs."""

    port: int
    api: OpenAIApi
    runner: web.AppRunner
    forwarder: FeedbackForwarder | None

    async def stop(self) -> None:
        self.api.serving = False  # /healthz says 503 while in-flight requests finish
        await self.runner.cleanup()  # stops listening, then waits up to the runner's shutdown_timeout
        if self.forwarder is not None:
            await self.forwarder.close()


async def start_openai(config: TrimtabConfig, generation: Generation, authenticator: Authenticator) -> OpenAIHttp:
    settings = config.serving.openai
    forwarder = FeedbackForwarder(settings.feedback_address, config.tls) if settings.feedback_address else None
    api = OpenAIApi(generation, authenticator, settings, forwarder)
    # access_log None: a line per request would cost the hot path; the spans and metrics say more.
    # handler_cancellation: a client that hangs up cancels its handler, which aborts its request in the engine
    # (as a gRPC cancel does) instead of generating for nobody.
    runner = web.AppRunner(
        api.app(), access_log=None, shutdown_timeout=config.serving.drain_grace_s, handler_cancellation=True
    )
    await runner.setup()
    ssl_context = server_ssl_context(config.tls)
    site = web.TCPSite(runner, config.serving.host, settings.port, reuse_port=False, ssl_context=ssl_context)
    await site.start()
    port = runner.addresses[0][1]
    return OpenAIHttp(port, api, runner, forwarder)


async def start_server(config: TrimtabConfig) -> RunningServer:
    meters = ServingMetrics.create()
    # First, so that a bad rails config stops start-up before the engine is loaded.
    rails = None
    if config.guardrails.enabled:
        protected = load_suite(config).protected  # the suite's secrets and blocklist join the output rails'
        rails = await LiveGuardrails.start(config.guardrails, protected, GuardrailMetrics.create())
    from serving.vllm_engine import VllmEngine  # vLLM's import alone is ~9 s: after the rails' config is checked

    registry = Registry(config.registry.root)
    pointers = PointerStore(redis_client(config.redis), config.redis.key_prefix, config.registry.channel)
    first = await initial_version(registry, pointers, config.model.path)
    engine = await VllmEngine.start(
        registry.path(first.id), config.engine, first.id, config.serving.cpu_cores_for_server
    )
    if config.engine.lora:
        zero = write_zero_adapter(registry.path(first.id), Path(tempfile.mkdtemp(prefix="trimtab-zero-adapter-")))
        await engine.add_adapter(ZERO_ADAPTER, zero)
    log.info("engine warmed up in %.1f s (its first request compiles vLLM's sampler)", await warm_up(engine))
    served_reward = None
    if config.serving.served_reward.address:
        served_reward = ServedReward(config.serving.served_reward, config.reward_service, meters, config.tls)
    recorder = ResponseRecorder(
        config,
        on_drop=lambda sink: meters.dropped_records.add(1, {"sink": sink}),
        observers=(served_reward.offer,) if served_reward else (),
    )
    recorder.start()
    if served_reward is not None:
        served_reward.start()

    server = grpc.aio.server(options=GRPC_OPTIONS)
    port = add_grpc_port(server, f"{config.serving.host}:{config.serving.port}", config.tls)
    replica_name = f"{config.serving.host}:{port}"
    manager = VersionManager(
        engine,
        registry,
        pointers,
        first,
        base_specs=tensor_specs(registry.path(first.id)),
        pause_mode=config.serving.pause_mode,
        lora=config.engine.lora,
        meters=meters,
        announce=lambda swap, manifest: recorder.version_event(version_event(swap, manifest, replica_name)),
        role=config.serving.role,
    )
    authenticator = Authenticator(config.auth)
    engine_stopped = asyncio.Event()
    generation = Generation(engine, config.serving, manager.router, recorder, meters, rails, engine_stopped.set)
    admin = AdminServicer(registry, pointers, manager, port, authenticator)
    server.add_generic_rpc_handlers(
        [
            handlers_for(INFERENCE_SERVICE, InferenceServicer(generation, authenticator)),
            handlers_for(ADMIN_SERVICE, admin),
        ]
    )
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, "grpc.health.v1.Health", reflection.SERVICE_NAME), server)
    await server.start()
    openai = await start_openai(config, generation, authenticator) if config.serving.openai.enabled else None
    follower = asyncio.create_task(manager.follow(config.serving.version_poll_s), name="pointer-follower")
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(
        port=port,
        server=server,
        health=health,
        engine=engine,
        recorder=recorder,
        follower=follower,
        manager=manager,
        drain_grace_s=config.serving.drain_grace_s,
        engine_stopped=engine_stopped,
        rails=rails,
        served_reward=served_reward,
        openai=openai,
    )


async def serve(config: TrimtabConfig, report: Callable[[str], None] = print) -> None:
    telemetry = setup_telemetry(config.telemetry, "serving", config.tls)
    running = await start_server(config)
    freeze_startup_heap()
    current = running.manager.router.current.version
    report(f"serving {current} on {config.serving.host}:{running.port} (registry {config.registry.root})")
    if running.openai is not None:
        name = config.serving.openai.model_name
        report(f"OpenAI API on http://{config.serving.host}:{running.openai.port}/v1 (model {name!r})")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stopping = [asyncio.create_task(stop.wait()), asyncio.create_task(running.engine_stopped.wait())]
    await asyncio.wait(stopping, return_when=asyncio.FIRST_COMPLETED)
    for task in stopping:
        task.cancel()
    # From here the process ends in bounded time, whichever step of the stop hangs; a second signal
    # ends it at once.
    deadline = StopDeadline(config.serving.drain_grace_s + config.serving.shutdown_timeout_s)
    deadline.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, deadline.expire)
    died = running.engine_stopped.is_set()
    if died:
        report("the inference engine stopped (its error is logged above): shutting down")
    report(f"draining (up to {config.serving.drain_grace_s:g}s for in-flight requests)")
    await running.stop(deadline.step)
    deadline.step("shutting telemetry down")
    telemetry.shutdown()
    report(f"stopped in {deadline.slowest()}")
    deadline.step("exiting (the event loop's and the interpreter's own clean-up)")
    if died:
        raise EngineStopped("the inference engine stopped")


def run(config: TrimtabConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(config))
    except EngineStopped:
        return 1  # a supervisor restarts the replica
    return 0
