"""The router's gRPC face: InferenceService calls go to the side `Split` picks for their user, AdminService
calls to the current replicas; bodies, metadata (API keys, trace context), deadlines, status codes and
trailing metadata (retry-after) pass through unchanged. Only GenerateRequest is parsed (for its user_id;
bytes that are not one are INVALID_ARGUMENT, as from a replica); requests and responses are forwarded as
the bytes the caller and the replica sent."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from typing import NoReturn

import grpc
from google.protobuf.message import DecodeError

from serving.router.split import Side, Split
from trimtab.v1 import inference_pb2

INFERENCE = "/trimtab.v1.InferenceService/"
ADMIN = "/trimtab.v1.AdminService/"
# Set by the transport for each hop, not by the caller: never forwarded.
HOP_HEADERS = {"content-type", "te", "user-agent", "host", "grpc-accept-encoding", "grpc-encoding", "grpc-timeout"}


def forwarded(metadata: Sequence[tuple[str, str | bytes]] | None) -> list[tuple[str, str | bytes]]:
    return [(key, value) for key, value in metadata or () if not key.startswith(":") and key not in HOP_HEADERS]


class GrpcProxy(grpc.GenericRpcHandler):
    def __init__(self, split: Split, channels: dict[Side, grpc.aio.Channel]) -> None:
        self._split = split
        self._channels = channels

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = handler_call_details.method
        if method == f"{INFERENCE}Generate":
            return grpc.unary_unary_rpc_method_handler(self._generate)
        if method == f"{INFERENCE}GenerateStream":
            return grpc.unary_stream_rpc_method_handler(self._generate_stream)
        if method.startswith(ADMIN):  # pointers are shared: any current replica answers for all
            return grpc.unary_unary_rpc_method_handler(functools.partial(self._admin, method))
        return None  # UNIMPLEMENTED, as from a replica

    async def _generate(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        call = (await self._upstream(request, context)).unary_unary(f"{INFERENCE}Generate")
        return await _unary(call, request, context)

    async def _generate_stream(self, request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
        call = (await self._upstream(request, context)).unary_stream(f"{INFERENCE}GenerateStream")(
            request, metadata=forwarded(context.invocation_metadata()), timeout=_left(context)
        )
        try:
            async for chunk in call:
                yield chunk
        except grpc.aio.AioRpcError as failed:
            await _relay(failed, context)
        finally:
            call.cancel()  # the client went away: stop the replica's generation too (no-op once done)

    async def _admin(self, method: str, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return await _unary(self._channels["current"].unary_unary(method), request, context)

    async def _upstream(self, request: bytes, context: grpc.aio.ServicerContext) -> grpc.aio.Channel:
        parsed = inference_pb2.GenerateRequest()
        try:
            parsed.ParseFromString(request)
        except DecodeError:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "request: does not parse as a trimtab.v1.GenerateRequest message"
            )
        return self._channels[self._split.side(parsed.user_id)]


async def _unary(call: grpc.aio.UnaryUnaryMultiCallable, request: object, context: grpc.aio.ServicerContext) -> bytes:
    """One unary call forwarded with the caller's metadata and what is left of its deadline."""
    try:
        reply: bytes = await call(request, metadata=forwarded(context.invocation_metadata()), timeout=_left(context))
        return reply
    except grpc.aio.AioRpcError as failed:
        await _relay(failed, context)


def _left(context: grpc.aio.ServicerContext) -> float | None:
    return context.time_remaining()


async def _relay(failed: grpc.aio.AioRpcError, context: grpc.aio.ServicerContext) -> NoReturn:
    """The replica's error as the router's: same code, details and trailing metadata."""
    await context.abort(failed.code(), failed.details() or "", failed.trailing_metadata() or ())
    raise AssertionError("not reached: abort raises")
