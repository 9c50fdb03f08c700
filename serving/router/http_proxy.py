"""The router's HTTP face: OpenAI API calls that generate go to the side `Split` picks for their user (the
body's `user`, else the API key's name, as the replicas take it) or for the version their `model` pins;
every other path to the current replicas. Bodies stream back as the replica writes them (SSE included),
with its status and headers; a replica that cannot be reached is a 502, and a body over the router's
`max_request_bytes` a 413, in OpenAI's error shape."""

from __future__ import annotations

import json
from collections.abc import Mapping

import aiohttp
from aiohttp import web

from serving.router.split import Side, Split
from trimtab.auth import Authenticator, Unauthenticated, credential

GENERATING = {"/v1/chat/completions", "/v1/completions"}
# Hop-by-hop, or recomputed for the next hop: never copied across.
HOP_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length",
}  # fmt: skip


def copied(headers: Mapping[str, str]) -> dict[str, str]:
    return {key: value for key, value in headers.items() if key.lower() not in HOP_HEADERS}


class HttpProxy:
    def __init__(
        self,
        split: Split,
        bases: dict[Side, str],
        authenticator: Authenticator,
        model_name: str,
        session: aiohttp.ClientSession,
    ) -> None:
        self._split = split
        self._bases = {side: base.rstrip("/") for side, base in bases.items()}
        self._authenticator = authenticator
        self._model_name = model_name
        self._session = session
        self.serving = True

    def app(self, max_request_bytes: int) -> web.Application:
        app = web.Application(client_max_size=max_request_bytes)  # a larger body is a 413
        app.router.add_get("/healthz", self.health)
        app.router.add_route("*", "/{path:.*}", self.forward)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"status": "serving" if self.serving else "draining"}, status=200 if self.serving else 503
        )

    async def forward(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:  # the router's own limit, said as a replica says its own
            return _error(413, "Request Entity Too Large", "invalid_request_error", "request_entity_too_large")
        side = (
            self._side(body, request.headers) if request.method == "POST" and request.path in GENERATING else "current"
        )
        url = self._bases[side] + request.path_qs
        response = None
        try:
            async with self._session.request(request.method, url, data=body, headers=copied(request.headers)) as reply:
                response = web.StreamResponse(status=reply.status, reason=reply.reason, headers=copied(reply.headers))
                await response.prepare(request)
                async for chunk in reply.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        except aiohttp.ClientConnectionError as exc:
            if response is not None:  # lost mid-answer: the client sees the connection end, as from the replica
                raise
            message = f"the {side} replicas at {self._bases[side]} cannot be reached: {exc}"
            return _error(502, message, "server_error", "upstream_unavailable")

    def _side(self, body: bytes, headers: Mapping[str, str]) -> Side:
        """The request's side; a body the replica will refuse (not JSON, no user) goes to current, which says why."""
        try:
            parsed = json.loads(body)
        except ValueError:
            return "current"
        if not isinstance(parsed, dict):
            return "current"
        user = parsed.get("user")
        if not isinstance(user, str) or not user:
            try:
                user = self._authenticator.principal(credential(headers.items())).key_name
            except Unauthenticated:
                return "current"
        model = parsed.get("model")
        pinned = model if isinstance(model, str) and model != self._model_name else None
        return self._split.side(user, pinned)


def _error(status: int, message: str, kind: str, code: str) -> web.Response:
    """The router's own refusal in OpenAI's error shape (the replicas' `serving.openai.errors`, without
    importing the replicas' request path into the router)."""
    return web.json_response({"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status)
