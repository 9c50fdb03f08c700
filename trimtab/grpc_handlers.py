"""A servicer's methods as gRPC handlers that parse their own requests.

grpcio turns a request its deserializer cannot parse into INTERNAL ("Exception deserializing request"),
which tells a client that sent bad bytes that the server broke. Registered through `handlers_for`
instead of the generated `add_*Servicer_to_server`, each method receives the raw bytes, parses them
itself and answers INVALID_ARGUMENT naming the message when they are not one; the servicer's methods
are called exactly as the generated code would call them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import DecodeError, Message


def handlers_for(service: ServiceDescriptor, servicer: object) -> grpc.GenericRpcHandler:
    """The generic handler of `service` (unary and server-streaming methods) over an asyncio servicer."""
    handlers: dict[str, grpc.RpcMethodHandler] = {}
    for method in service.methods:
        if method.client_streaming:
            raise ValueError(f"{method.full_name}: client streaming is not supported here")
        behaviour = getattr(servicer, method.name)
        serializer = message_factory.GetMessageClass(method.output_type).SerializeToString
        if method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _streaming(method, behaviour), request_deserializer=None, response_serializer=serializer
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(method, behaviour), request_deserializer=None, response_serializer=serializer
            )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _unary(
    method: MethodDescriptor, behaviour: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Message]]
) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> Message:
        return await behaviour(await _parse(method, raw, context), context)

    return handle


def _streaming(
    method: MethodDescriptor, behaviour: Callable[[Any, grpc.aio.ServicerContext], AsyncIterator[Message]]
) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Message]]:
    async def handle(raw: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
        async for response in behaviour(await _parse(method, raw, context), context):
            yield response

    return handle


async def _parse(method: MethodDescriptor, raw: bytes, context: grpc.aio.ServicerContext) -> Message:
    request = message_factory.GetMessageClass(method.input_type)()
    try:
        request.ParseFromString(raw)
    except DecodeError:
        await _invalid(context, f"request: does not parse as a {method.input_type.full_name} message")
    return request


async def _invalid(context: grpc.aio.ServicerContext, message: str) -> NoReturn:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
    raise AssertionError("context.abort returns only by raising")
