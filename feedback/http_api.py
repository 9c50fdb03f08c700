"""The same Submit over HTTP/JSON (aiohttp): the proto's JSON mapping in, the proto's JSON mapping out.

    POST /v1/feedback        body: SubmitRequest -> 200 SubmitResponse, or an error
    POST /v1/feedback:batch  body: SubmitBatchRequest -> 200 SubmitBatchResponse (a result per item),
                             or an error for the whole call (key, item count, a feedback_id twice)
    GET  /v1/openapi.json    the OpenAPI document (feedback.openapi)
    GET  /healthz            200 while serving, 503 while draining

Errors are `{"error": {"code": <http>, "status": "<gRPC status>", "message": "..."}}` with the same
message as over gRPC, and a Retry-After header (seconds) where the gRPC call has a retry-after trailer.
"""

from __future__ import annotations

import json
import logging
from typing import TypeVar

from aiohttp import web
from google.protobuf.message import Message

from feedback.errors import FeedbackError, internal, invalid, too_large
from feedback.openapi import BATCH_PATH, HEALTH_PATH, OPENAPI_PATH, SUBMIT_PATH, document
from feedback.service import FeedbackService, batch_response
from trimtab.auth import credential
from trimtab.protojson import body_of, parse_body
from trimtab.v1 import feedback_pb2

log = logging.getLogger(__name__)

Parsed = TypeVar("Parsed", bound=Message)


class HttpFeedback:
    """The HTTP face of a FeedbackService."""

    def __init__(self, service: FeedbackService, max_request_bytes: int) -> None:
        self._service = service
        self._max_bytes = max_request_bytes
        self._openapi = json.dumps(document(), indent=2)
        self.serving = True

    def app(self) -> web.Application:
        # client_max_size: aiohttp refuses larger bodies itself (413) before reading them whole.
        app = web.Application(client_max_size=self._max_bytes)
        app.router.add_post(SUBMIT_PATH, self.submit)
        app.router.add_post(BATCH_PATH, self.submit_batch)
        app.router.add_get(OPENAPI_PATH, self.openapi)
        app.router.add_get(HEALTH_PATH, self.health)
        return app

    async def submit(self, http: web.Request) -> web.Response:
        headers = list(http.headers.items())
        try:
            request = await self._parse(http, feedback_pb2.SubmitRequest())
        except FeedbackError as error:
            self._service.refused(error)
            return _error(error)
        try:
            response = await self._service.submit(request, credential(headers), headers)
        except FeedbackError as error:
            return _error(error)
        except Exception:  # a bug: say so without details, keep serving
            log.exception("Submit failed unexpectedly")
            refusal = internal()
            self._service.refused(refusal)
            return _error(refusal)
        return web.json_response(body_of(response))

    async def submit_batch(self, http: web.Request) -> web.Response:
        headers = list(http.headers.items())
        try:
            batch = await self._parse(http, feedback_pb2.SubmitBatchRequest())
        except FeedbackError as error:
            self._service.refused(error)
            return _error(error)
        try:
            outcomes = await self._service.submit_batch(batch.items, credential(headers), headers)
        except FeedbackError as error:
            return _error(error)
        except Exception:  # a bug: say so without details, keep serving
            log.exception("SubmitBatch failed unexpectedly")
            refusal = internal()
            self._service.refused(refusal)
            return _error(refusal)
        return web.json_response(body_of(batch_response(outcomes)))

    async def _parse(self, http: web.Request, message: Parsed) -> Parsed:
        try:
            raw = await http.read()
        except web.HTTPRequestEntityTooLarge:
            raise too_large(self._max_bytes) from None
        try:
            return parse_body(raw, message)
        except ValueError as exc:
            raise invalid("request body", str(exc)) from None

    async def openapi(self, http: web.Request) -> web.Response:
        return web.Response(text=self._openapi, content_type="application/json")

    async def health(self, http: web.Request) -> web.Response:
        status = "SERVING" if self.serving else "NOT_SERVING"
        return web.json_response({"status": status}, status=200 if self.serving else 503)


def _error(error: FeedbackError) -> web.Response:
    status = error.http_status
    body = {"error": {"code": status, "status": error.code.name, "message": error.message}}
    headers = {"Retry-After": error.retry_after_header} if error.retry_after_header else None
    return web.json_response(body, status=status, headers=headers)
