"""`trimtab serve`: the grpc.aio server with health checking, reflection and a graceful drain.

Lifecycle: start the engine -> start the response recorder -> bind and mark SERVING -> on SIGTERM or
SIGINT mark NOT_SERVING (load balancers stop sending), let in-flight requests finish within
serving.drain_grace_s, flush buffered records, shut the engine down.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from serving.inference import InferenceServicer
from serving.metrics import ServingMetrics
from serving.recorder import ResponseRecorder
from serving.routing import Router, Served
from serving.vllm_engine import VllmEngine
from trimtab.config import TrimtabConfig
from trimtab.telemetry import setup_telemetry
from trimtab.v1 import inference_pb2, inference_pb2_grpc

log = logging.getLogger(__name__)
SERVICE_NAMES = (inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name,)

GRPC_OPTIONS = [
    # Refuse to share the port with another server: two replicas on one port would split traffic silently.
    ("grpc.so_reuseport", 0),
    # Prompts are capped at serving.max_prompt_chars; 1 MiB bounds what a client can make us buffer.
    ("grpc.max_receive_message_length", 1 << 20),
    # Detect dead clients on long streams so their requests are aborted inside the engine.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]


@dataclass
class RunningServer:
    """A started server: its bound port and the handles `stop()` needs."""

    port: int
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    engine: VllmEngine
    recorder: ResponseRecorder
    drain_grace_s: float

    async def stop(self) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.stop(self.drain_grace_s)  # new RPCs refused; in-flight ones get the grace period
        await self.recorder.close(timeout_s=5.0)
        self.engine.shutdown()


async def start_server(config: TrimtabConfig) -> RunningServer:
    engine = await VllmEngine.start(config.model.path, config.engine, config.serving.initial_version)
    recorder = ResponseRecorder(config)
    recorder.start()
    router = Router(Served(config.serving.initial_version))
    server = grpc.aio.server(options=GRPC_OPTIONS)
    servicer = InferenceServicer(engine, config.serving, router, recorder, ServingMetrics.create())
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(servicer, server)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    reflection.enable_server_reflection((*SERVICE_NAMES, "grpc.health.v1.Health", reflection.SERVICE_NAME), server)
    port = server.add_insecure_port(f"{config.serving.host}:{config.serving.port}")
    await server.start()
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(port, server, health, engine, recorder, config.serving.drain_grace_s)


async def serve(config: TrimtabConfig, report: Callable[[str], None] = print) -> None:
    telemetry = setup_telemetry(config.telemetry, "serving")
    running = await start_server(config)
    report(f"serving {config.model.path} as {config.serving.initial_version} on {config.serving.host}:{running.port}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    report(f"draining (up to {config.serving.drain_grace_s:g}s for in-flight requests)")
    await running.stop()
    telemetry.shutdown()
    report("stopped")


def run(config: TrimtabConfig) -> int:
    asyncio.run(serve(config))
    return 0
