"""InferenceService: Generate and GenerateStream, the gRPC face of the shared request path
(serving/generation.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import NoReturn

import grpc

from serving.authn import authenticate
from serving.generation import Chunk, Generation, Refused, tracer
from trimtab.auth import Authenticator
from trimtab.telemetry import context_from_grpc
from trimtab.v1 import inference_pb2, inference_pb2_grpc


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, generation: Generation, authenticator: Authenticator) -> None:
        self._generation = generation
        self._authenticator = authenticator

    async def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.GenerateResponse:
        with tracer.start_as_current_span("Generate", context=context_from_grpc(context.invocation_metadata())):
            principal = await authenticate(self._authenticator, context)
            try:
                async with self._generation.admitted(request, principal) as job:
                    await self._generation.complete(job)
            except Refused as refused:
                await _abort(context, refused)
            return inference_pb2.GenerateResponse(
                request_id=job.request_id, candidates=[run.candidate() for run in job.runs]
            )

    async def GenerateStream(
        self, request: inference_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[inference_pb2.GenerateStreamResponse]:
        with tracer.start_as_current_span("GenerateStream", context=context_from_grpc(context.invocation_metadata())):
            principal = await authenticate(self._authenticator, context)
            try:
                async with (
                    self._generation.admitted(request, principal) as job,
                    # aclosing: a client that went away aborts its candidates inside the engine at once.
                    contextlib.aclosing(self._generation.stream(job)) as chunks,
                ):
                    async for chunk in chunks:
                        yield _stream_response(job.request_id, chunk)
            except Refused as refused:
                await _abort(context, refused)


async def _abort(context: grpc.aio.ServicerContext, refused: Refused) -> NoReturn:
    await context.abort(refused.code, refused.message)
    raise AssertionError("not reached: abort raises")


def _stream_response(request_id: str, chunk: Chunk) -> inference_pb2.GenerateStreamResponse:
    return inference_pb2.GenerateStreamResponse(
        request_id=request_id,
        index=chunk.run.index,
        response_id=chunk.run.response_id,
        text_delta=chunk.text,
        final=chunk.run.candidate() if chunk.final else None,
    )
