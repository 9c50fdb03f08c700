"""The OpenAI-compatible HTTP face of `trimtab serve` (aiohttp), over the shared request path:

    POST /v1/chat/completions   chat, streamed over server-sent events with "stream": true
    POST /v1/completions        one text prompt
    GET  /v1/models[/{id}]      the served name, the current version and the canary
    POST /v1/feedback           FeedbackService.Submit (serving/openai/feedback.py)
    GET  /v1/openapi.json       the OpenAPI document of all of the above
    GET  /healthz               200 while serving, 503 while draining

A stream that fails after its first event (the engine died) ends with an `error` event: its HTTP status
was already sent.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncGenerator
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from serving.generation import Generation, Job, Options, Refused, tracer
from serving.openai import translate
from serving.openai.errors import ApiError, from_refused, from_validation, openai_errors
from serving.openai.feedback import FeedbackForwarder
from serving.openai.openapi import CHAT_PATH, COMPLETIONS_PATH, FEEDBACK_PATH, MODELS_PATH, OPENAPI_PATH, document
from serving.openai.schema import ChatCompletionRequest, CompletionRequest, Model, ModelList, Sampling
from trimtab.auth import Authenticator, Principal, Unauthenticated, credential
from trimtab.config.serving import OpenAIConfig
from trimtab.telemetry import context_from_grpc
from trimtab.v1 import inference_pb2

HEALTH_PATH = "/healthz"
B = TypeVar("B", bound=BaseModel)
Events = AsyncGenerator[dict[str, Any], None]


class OpenAIApi:
    def __init__(
        self,
        generation: Generation,
        authenticator: Authenticator,
        config: OpenAIConfig,
        feedback: FeedbackForwarder | None,
    ) -> None:
        self._generation = generation
        self._authenticator = authenticator
        self._config = config
        self._feedback = feedback
        self._openapi = json.dumps(document(config.model_name), indent=2)
        self._started = int(time.time())
        self.serving = True

    def app(self) -> web.Application:
        # client_max_size: aiohttp refuses larger bodies itself (413) before reading them whole.
        app = web.Application(client_max_size=self._config.max_request_bytes, middlewares=[openai_errors])
        app.router.add_post(CHAT_PATH, self.chat)
        app.router.add_post(COMPLETIONS_PATH, self.completions)
        app.router.add_get(MODELS_PATH, self.models)
        app.router.add_get(MODELS_PATH + "/{model}", self.model)
        app.router.add_post(FEEDBACK_PATH, self.feedback)
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_get(HEALTH_PATH, self.health)
        return app

    async def chat(self, http: web.Request) -> web.StreamResponse:
        principal = self._principal(http)
        body = _parse(ChatCompletionRequest, await http.read())
        request, options = translate.chat_request(body, principal, self._config.model_name)
        texts = self._generation.engine.token_texts
        face = translate.Face(
            chat=True, user=request.user_id, logprobs=body.logprobs, token_texts=texts, token_field=body.token_field()
        )
        return await self._serve(http, CHAT_PATH, face, body, request=request, principal=principal, options=options)

    async def completions(self, http: web.Request) -> web.StreamResponse:
        principal = self._principal(http)
        body = _parse(CompletionRequest, await http.read())
        request, options = translate.completion_request(body, principal, self._config.model_name)
        logprobs = body.logprobs is not None
        texts = self._generation.engine.token_texts
        face = translate.Face(chat=False, user=request.user_id, logprobs=logprobs, token_texts=texts)
        return await self._serve(
            http, COMPLETIONS_PATH, face, body, request=request, principal=principal, options=options
        )

    async def _serve(
        self,
        http: web.Request,
        path: str,
        face: translate.Face,
        body: Sampling,
        *,
        request: inference_pb2.GenerateRequest,
        principal: Principal,
        options: Options,
    ) -> web.StreamResponse:
        """Through the shared request path: the whole body, or server-sent events with body.stream."""
        context = context_from_grpc(list(http.headers.items()))
        with tracer.start_as_current_span(f"POST {path}", context=context):
            try:
                async with self._generation.admitted(request, principal, options) as job:
                    if body.stream:
                        usage = body.stream_options is not None and body.stream_options.include_usage
                        return await _sse(http, self._events(job, face, usage))
                    await self._generation.complete(job)
            except Refused as refused:
                raise from_refused(refused, face.chat, face.token_field) from None
        return web.json_response(face.whole(job))

    async def _events(self, job: Job, face: translate.Face, include_usage: bool) -> Events:
        sent = [translate.Sent() for _ in job.runs]
        async with contextlib.aclosing(self._generation.stream(job)) as chunks:
            async for chunk in chunks:
                event = face.chunk(job, chunk, sent[chunk.run.index])
                if include_usage:  # OpenAI's shape: every chunk says usage, null until the last
                    event["usage"] = None
                yield event
        if include_usage:
            yield face.usage_chunk(job)

    async def models(self, http: web.Request) -> web.Response:
        self._principal(http)
        return web.json_response(ModelList(object="list", data=self._models()))

    async def model(self, http: web.Request) -> web.Response:
        self._principal(http)
        wanted = http.match_info["model"]
        for model in self._models():
            if model["id"] == wanted:
                return web.json_response(model)
        raise ApiError(404, f"model: {wanted!r} is not served here", param="model", code="model_not_found")

    def _models(self) -> list[Model]:
        router = self._generation.router

        def entry(name: str, role: str) -> Model:
            return Model(id=name, object="model", created=self._started, owned_by="trimtab", role=role)

        roles = [entry(self._config.model_name, "router"), entry(router.current.version, "current")]
        if router.canary is not None:
            roles.append(entry(router.canary.version, "canary"))
        return roles

    async def feedback(self, http: web.Request) -> web.Response:
        if self._feedback is None:
            raise ApiError(501, "feedback is not forwarded by this server (serving.openai.feedback_address is empty)")
        return await self._feedback.submit(http)

    async def openapi(self, http: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def health(self, http: web.Request) -> web.Response:
        status = "SERVING" if self.serving else "NOT_SERVING"
        return web.json_response({"status": status}, status=200 if self.serving else 503)

    def _principal(self, http: web.Request) -> Principal:
        try:
            return self._authenticator.principal(credential(http.headers.items()))
        except Unauthenticated as exc:
            raise ApiError(401, str(exc), code="invalid_api_key") from None


def _parse(model: type[B], raw: bytes) -> B:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise from_validation(exc) from None


async def _sse(http: web.Request, events: Events) -> web.StreamResponse:
    """Server-sent events: each chunk as `data: {json}`, then `data: [DONE]`. The first chunk is taken
    before the headers go out, so a request refused then still gets its own status."""
    # aclosing: a client that went away (a write fails) aborts the candidates inside the engine at once.
    async with contextlib.aclosing(events):
        first = await anext(events, None)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(http)
        try:
            if first is not None:
                await response.write(_event(first))
            async for event in events:
                await response.write(_event(event))
        except Refused as refused:
            await response.write(_event(dict(from_refused(refused).body())))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"
