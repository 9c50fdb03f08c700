"""POST /v1/feedback on the OpenAI port: the body is FeedbackService's SubmitRequest (protobuf's JSON
mapping, as on the feedback service's own HTTP API), forwarded over gRPC with the caller's API key and
trace context. The feedback service decides everything (validation, exactly-once, rate limits), so
feedback given here is the same feedback as anywhere else; its refusals come back in OpenAI's shape."""

from __future__ import annotations

import grpc
from aiohttp import web

from serving.openai.errors import ApiError, from_status, invalid
from trimtab.config.tls import TlsConfig
from trimtab.protojson import body_of, parse_body
from trimtab.telemetry import trace_fields
from trimtab.tls import aio_grpc_channel
from trimtab.v1 import feedback_pb2, feedback_pb2_grpc

FORWARDED_HEADERS = ("authorization", "x-api-key")
SUBMIT_TIMEOUT_S = 30.0  # above the feedback service's own waits (a fresh record, the broker's acks)


class FeedbackForwarder:
    def __init__(self, address: str, tls: TlsConfig) -> None:
        self._address = address
        self._channel = aio_grpc_channel(address, tls)
        self._stub = feedback_pb2_grpc.FeedbackServiceStub(self._channel)

    async def submit(self, http: web.Request) -> web.Response:
        try:
            request = parse_body(await http.read(), feedback_pb2.SubmitRequest())
        except ValueError as exc:
            raise invalid("request body", str(exc)) from None
        metadata = [(name, http.headers[name]) for name in FORWARDED_HEADERS if name in http.headers]
        metadata += list(trace_fields().items())
        try:
            response = await self._stub.Submit(request, timeout=SUBMIT_TIMEOUT_S, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            raise _refusal(error, self._address) from None
        return web.json_response(body_of(response))

    async def close(self) -> None:
        await self._channel.close()


def _refusal(error: grpc.aio.AioRpcError, address: str) -> ApiError:
    trailers = dict(error.trailing_metadata() or ())
    retry_after = trailers.get("retry-after")
    message = error.details() or error.code().name
    if error.code() == grpc.StatusCode.UNAVAILABLE and retry_after is None:  # the service itself is unreachable
        message, retry_after = f"the feedback service at {address} is unavailable: {message}", "1"
    return from_status(error.code(), message, str(retry_after) if retry_after is not None else None)
