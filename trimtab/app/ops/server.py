"""`trimtab ops`: one small HTTP app for operators.

    GET /               the page (page.html: plain HTML, CSS and script, no external assets)
    GET /api/versions   the versions timeline: gate numbers, decisions, what serves now
    GET /api/panels     every panel's series from Prometheus (trimtab/app/ops/panels.py)
    GET /healthz        200 while the app runs

The page fetches both APIs every `ops.refresh_s`. A source that is down (Redis, the broker,
Prometheus) is named in the reply's `problems` and the rest is still shown.

With `auth.enabled` everything but /healthz is for admin keys (`auth.api_keys[].admin`): the page shows
every tenant's traffic. A key is taken as `authorization: Bearer KEY`, `x-api-key: KEY`, or HTTP Basic
with the key as the password, which is what a browser asks for on a 401: 401 without a known key, 403
for a key that is not an admin's.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from trimtab.app.ops.panels import panels
from trimtab.app.ops.sources import VersionDecisions, panel_series, version_rows
from trimtab.auth import Authenticator, Unauthenticated, credential
from trimtab.config import TrimtabConfig
from trimtab.records import redis_client
from trimtab.registry import Pointers, PointerStore, Registry
from trimtab.tls import scheme, server_ssl_context

PAGE = Path(__file__).with_name("page.html")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)


class OpsApp:
    def __init__(self, config: TrimtabConfig) -> None:
        self._config = config
        self._ops = config.ops
        self._registry = Registry(config.registry.root)
        self._decisions = VersionDecisions(config.kafka, config.ops.events_timeout_s)
        self._redis = redis_client(config.redis)
        self._pointers = PointerStore(self._redis, config.redis.key_prefix, config.registry.channel)
        self._http: aiohttp.ClientSession | None = None
        self._auth = Authenticator(config.auth)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._admins_only])
        app.router.add_get("/", self.page)
        app.router.add_get("/api/versions", self.versions)
        app.router.add_get("/api/panels", self.panels)
        app.router.add_get("/healthz", self.healthz)
        app.on_cleanup.append(self._close)
        return app

    @web.middleware
    async def _admins_only(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/healthz":
            return await handler(request)
        try:
            principal = self._auth.principal(presented_key(request))
        except Unauthenticated as exc:
            challenge = {"WWW-Authenticate": 'Basic realm="trimtab ops"'}  # a browser asks for the key
            raise web.HTTPUnauthorized(text=f"{exc}\n", headers=challenge) from None
        if not principal.admin:
            reason = f"API key {principal.key_name!r} is not an admin key: the ops page shows every tenant\n"
            raise web.HTTPForbidden(text=reason)
        return await handler(request)

    async def page(self, request: web.Request) -> web.Response:
        html = PAGE.read_text().replace("{{refresh_ms}}", str(int(self._ops.refresh_s * 1000)))
        return web.Response(text=html, content_type="text/html")

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def versions(self, request: web.Request) -> web.Response:
        problems = []
        pointers: Pointers | None = None
        try:
            pointers = await self._pointers.read()
        except RedisError as exc:
            problems.append(f"registry pointers (Redis): {exc}")
        problem = await asyncio.to_thread(self._decisions.refresh)
        if problem:
            problems.append(problem)
        rows = version_rows(self._registry.versions(), pointers, self._decisions.by_version, self._ops.versions_shown)
        body: dict[str, Any] = {
            "current": pointers.current if pointers else None,
            "canary": pointers.canary if pointers else None,
            "canary_share": pointers.canary_share if pointers else 0.0,
            "versions": rows,
            "problems": problems,
        }
        return web.json_response(body)

    async def panels(self, request: web.Request) -> web.Response:
        if self._http is None:
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        url = self._ops.prometheus_url.rstrip("/")
        try:
            found = await asyncio.gather(
                *(
                    panel_series(self._http, url, panel, window_s=self._ops.window_s, step_s=self._ops.step_s)
                    for panel in panels()
                )
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.json_response({"panels": [], "problems": [f"Prometheus at {url}: {exc!r}"]})
        return web.json_response({"panels": found, "problems": []})

    async def _close(self, app: web.Application) -> None:
        if self._http is not None:
            await self._http.close()
        await self._redis.aclose()
        await asyncio.to_thread(self._decisions.close)


def presented_key(request: web.Request) -> str | None:
    """The API key of a request: a bearer or x-api-key header, or the password of HTTP Basic."""
    header = request.headers.get("authorization", "")
    if header[:6].lower() == "basic ":
        try:
            return base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")[2] or None
        except (binascii.Error, UnicodeDecodeError):
            return None
    return credential(request.headers.items())


async def serve(config: TrimtabConfig, ready: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or cancellation); `ready` is set once the port is bound."""
    runner = web.AppRunner(OpsApp(config).app())
    await runner.setup()
    site = web.TCPSite(runner, config.ops.host, config.ops.port, ssl_context=server_ssl_context(config.tls))
    await site.start()
    url = f"{scheme(config.tls)}://{config.ops.host}:{config.ops.port}/"
    log.info("ops page on %s", url)
    print(f"ops page on {url} (Prometheus: {config.ops.prometheus_url})")
    if ready is not None:
        ready.set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def run(config: TrimtabConfig) -> int:
    asyncio.run(serve(config))
    return 0
