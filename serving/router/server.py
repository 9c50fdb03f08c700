"""`trimtab route`: follow the registry's pointers, and send each request to the current or the canary
replicas (serving.role) on gRPC and on the OpenAI API until SIGTERM, then drain like a replica: health
NOT_SERVING, calls in flight finish within serving.drain_grace_s.

The router keeps no state but the pointers it follows: run as many as you like side by side. It loads no
model and records nothing; the replicas behind it do both."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
import grpc
from aiohttp import web
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from serving.grpc_options import GRPC_OPTIONS, SERVICE_NAMES
from serving.router.grpc_proxy import GrpcProxy
from serving.router.http_proxy import HttpProxy
from serving.router.split import Side, Split
from trimtab.auth import Authenticator
from trimtab.config import TrimtabConfig
from trimtab.heap import freeze_startup_heap
from trimtab.records import redis_client
from trimtab.registry import PointerStore, Registry
from trimtab.registry.pointers import follow
from trimtab.tls import add_grpc_port, aio_grpc_channel, client_ssl_context, server_ssl_context


@dataclass
class RunningRouter:
    port: int
    http_port: int
    split: Split
    server: grpc.aio.Server
    health: health_aio.HealthServicer
    http: HttpProxy
    runner: web.AppRunner
    session: aiohttp.ClientSession
    channels: dict[Side, grpc.aio.Channel]
    follower: asyncio.Task[None]
    drain_grace_s: float

    async def stop(self) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        self.http.serving = False
        await asyncio.gather(self.server.stop(self.drain_grace_s), self.runner.cleanup())
        self.follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.follower
        await self.session.close()
        for channel in self.channels.values():
            await channel.close()


async def start_router(config: TrimtabConfig) -> RunningRouter:
    settings = config.serving.router
    registry = Registry(config.registry.root)
    pointers = PointerStore(redis_client(config.redis), config.redis.key_prefix, config.registry.channel)
    split = Split()

    async def refresh() -> None:
        split.update(await pointers.read(), registry)

    await refresh()  # the first split before any call arrives; Redis down here is a start-up failure
    follower = asyncio.create_task(follow(pointers, refresh, config.serving.version_poll_s), name="pointer-follower")
    # round_robin: calls spread over every replica a dns:/// target resolves to (one connection each).
    upstream = [*GRPC_OPTIONS, ("grpc.lb_policy_name", "round_robin")]
    channels: dict[Side, grpc.aio.Channel] = {
        "current": aio_grpc_channel(settings.current, config.tls, upstream),
        "canary": aio_grpc_channel(settings.canary, config.tls, upstream),
    }
    server = grpc.aio.server(options=GRPC_OPTIONS)
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_generic_rpc_handlers([GrpcProxy(split, channels)])
    port = add_grpc_port(server, f"{settings.host}:{settings.port}", config.tls)
    await server.start()
    # auto_decompress off: bodies pass through as the replica encoded them, with its content-encoding.
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=client_ssl_context(config.tls) or True),
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    bases: dict[Side, str] = {"current": settings.current_http, "canary": settings.canary_http}
    http = HttpProxy(split, bases, Authenticator(config.auth), config.serving.openai.model_name, session)
    runner = web.AppRunner(
        http.app(settings.max_request_bytes),
        access_log=None,
        shutdown_timeout=config.serving.drain_grace_s,
        handler_cancellation=True,  # a client that hangs up closes the replica's connection: it stops generating
    )
    await runner.setup()
    ssl_context = server_ssl_context(config.tls)
    await web.TCPSite(runner, settings.host, settings.http_port, reuse_port=False, ssl_context=ssl_context).start()
    for name in ("", *SERVICE_NAMES):
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningRouter(
        port=port,
        http_port=int(runner.addresses[0][1]),
        split=split,
        server=server,
        health=health,
        http=http,
        runner=runner,
        session=session,
        channels=channels,
        follower=follower,
        drain_grace_s=config.serving.drain_grace_s,
    )


async def route(config: TrimtabConfig, report: Callable[[str], None] = print) -> None:
    settings = config.serving.router
    running = await start_router(config)
    freeze_startup_heap()
    report(
        f"routing gRPC on {settings.host}:{running.port} and the OpenAI API on http://{settings.host}:"
        f"{running.http_port}: current replicas {settings.current} ({settings.current_http}), canary replicas"
        f" {settings.canary} ({settings.canary_http})"
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    report(f"draining (up to {config.serving.drain_grace_s:g}s for calls in flight)")
    await running.stop()
    report("stopped")


def run(config: TrimtabConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(route(config))
    return 0
