"""`trimtab feedback` / `python -m feedback`: both transports in one process, with a graceful drain.

gRPC (grpc.aio) carries FeedbackService, standard health checking and server reflection; HTTP
(aiohttp) carries the JSON API. On SIGTERM or SIGINT: health goes NOT_SERVING, calls in flight get
`drain_grace_s` to finish, then the producer is flushed and closed. With `feedback.workers` above one,
`run` starts that many such processes on shared ports (`feedback/workers.py`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable

import grpc
import redis.asyncio as aioredis
import uvloop
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry import trace

from feedback.evaluation import EvaluationEvents
from feedback.grpc_api import SERVICE_NAME, GrpcFeedback
from feedback.http_api import HttpFeedback
from feedback.metrics import FeedbackMetrics
from feedback.producer import FeedbackProducer
from feedback.service import FeedbackService
from trimtab.config import TrimtabConfig
from trimtab.errors import TrimtabError
from trimtab.heap import freeze_startup_heap
from trimtab.redis_wire import pack_in_c
from trimtab.telemetry import setup_telemetry
from trimtab.tls import add_grpc_port, server_ssl_context

log = logging.getLogger(__name__)


class BindError(TrimtabError):
    """An endpoint's address is taken or cannot be bound."""


class FeedbackServer:
    """Both transports over one FeedbackService; `start()` binds, `stop()` drains."""

    def __init__(
        self,
        config: TrimtabConfig,
        metrics: FeedbackMetrics | None = None,
        tracer: trace.Tracer | None = None,
        evaluations: EvaluationEvents | None = None,
        shared_ports: bool = False,
    ) -> None:
        """`shared_ports`: bind with SO_REUSEPORT, as one of `feedback.workers` processes on the same ports."""
        self._config = config
        self._shared_ports = shared_ports
        settings = config.feedback
        # Every Redis step of the service shares one connection of this pool (`feedback.roundtrips`), which
        # takes another when it breaks. Blocking: whatever takes one beyond `redis_connections` waits (up to
        # redis_wait_s) instead of failing at once as the default pool does when it runs out.
        pool = aioredis.BlockingConnectionPool.from_url(
            config.redis.url, max_connections=settings.redis_connections, timeout=settings.redis_wait_s
        )
        pack_in_c(pool)
        self._redis = aioredis.Redis(connection_pool=pool)
        self._producer = FeedbackProducer(config.kafka, config.kafka.topics.feedback.name, settings.produce_timeout_s)
        self.service = FeedbackService(config, self._redis, self._producer, metrics, tracer, evaluations)
        self._http = HttpFeedback(self.service, settings.max_request_bytes)
        self._health = health.aio.HealthServicer()
        self._grpc = grpc.aio.server(
            options=[
                # Messages larger than any valid submission are refused by gRPC before parsing.
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                # Linux gRPC sets SO_REUSEPORT by default: a second server on a busy port would
                # silently share it instead of failing. Fail loudly instead, unless this process is one of
                # the workers meant to share it (their parent checked that no one else holds it).
                ("grpc.so_reuseport", int(shared_ports)),
            ]
        )
        self._runner: web.AppRunner | None = None
        self.grpc_port = 0
        self.http_port = 0

    async def start(self) -> None:
        settings = self._config.feedback
        self._grpc.add_generic_rpc_handlers([GrpcFeedback(self.service).handler()])
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc)
        grpc_address = f"{settings.grpc_host}:{settings.grpc_port}"
        try:
            self.grpc_port = add_grpc_port(self._grpc, grpc_address, self._config.tls)
        except RuntimeError as exc:  # grpc reports a failed bind this way
            raise BindError(f"cannot bind gRPC to {grpc_address}: address in use or not available") from exc
        await self._grpc.start()
        self._runner = web.AppRunner(self._http.app(), access_log=None)
        await self._runner.setup()
        try:
            ssl_context = server_ssl_context(self._config.tls)
            site = web.TCPSite(
                self._runner,
                settings.http_host,
                settings.http_port,
                ssl_context=ssl_context,
                reuse_port=self._shared_ports,
            )
            await site.start()
        except OSError as exc:
            raise BindError(f"cannot bind HTTP to {settings.http_host}:{settings.http_port}: {exc.strerror}") from exc
        self.http_port = int(self._runner.addresses[0][1])
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def stop(self) -> None:
        grace = self._config.feedback.drain_grace_s
        self._http.serving = False
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._grpc.stop(grace)
        if self._runner is not None:
            await self._runner.shutdown()
            await self._runner.cleanup()
        await self.service.drain()
        await asyncio.to_thread(self._producer.close)
        await self._redis.aclose()


async def serve(config: TrimtabConfig, shared_ports: bool = False, on_ready: Callable[[], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT; `on_ready` is called once both transports serve."""
    server = FeedbackServer(config, shared_ports=shared_ports)
    try:
        await server.start()
    except BindError:
        await server.stop()  # whatever did start
        raise
    settings = config.feedback
    log.warning(
        "feedback: gRPC on %s:%d, HTTP on %s:%d (topic %s)",
        settings.grpc_host,
        server.grpc_port,
        settings.http_host,
        server.http_port,
        config.kafka.topics.feedback.name,
    )
    freeze_startup_heap()
    if on_ready is not None:
        on_ready()
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    log.warning("feedback: draining (grace %.1f s)", settings.drain_grace_s)
    await server.stop()


def run(config: TrimtabConfig) -> int:
    """The `trimtab feedback` entry point: serve until SIGTERM/SIGINT; 0 on a clean stop, 1 if it cannot bind
    (or, with several workers, if one of them stopped on its own)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if config.feedback.workers > 1:
        from feedback.workers import run_workers

        return run_workers(config)
    return serve_process(config)


def serve_process(
    config: TrimtabConfig,
    shared_ports: bool = False,
    instance: str | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """One process's service: the only one, or one of the workers (`feedback.workers`)."""
    telemetry = setup_telemetry(config.telemetry, "feedback", config.tls, instance)
    loop_factory = uvloop.new_event_loop if config.feedback.event_loop == "uvloop" else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config, shared_ports, on_ready))
    except BindError as exc:
        print(f"feedback: {exc}", file=sys.stderr)
        return 1
    finally:
        telemetry.shutdown()
    return 0
