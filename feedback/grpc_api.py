"""FeedbackService over gRPC: Submit and SubmitBatch, with FeedbackError rendered as a status, message
and retry-after (a batch item's as its Refusal).

The method handlers take the raw request bytes and parse them themselves, so a message that does not
parse is INVALID_ARGUMENT naming the message, not the INTERNAL that gRPC's own deserializer failure
would give. RESOURCE_EXHAUSTED and UNAVAILABLE carry a `retry-after` trailer (whole seconds).
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf.message import DecodeError

from feedback.errors import FeedbackError, internal, invalid
from feedback.service import FeedbackService, batch_response
from trimtab.auth import credential
from trimtab.v1 import feedback_pb2

log = logging.getLogger(__name__)

SERVICE_NAME = feedback_pb2.DESCRIPTOR.services_by_name["FeedbackService"].full_name


class GrpcFeedback:
    """The gRPC face of a FeedbackService."""

    def __init__(self, service: FeedbackService) -> None:
        self._service = service

    def handler(self) -> grpc.GenericRpcHandler:
        submit = grpc.unary_unary_rpc_method_handler(
            self.submit,
            request_deserializer=None,  # raw bytes: see the module docstring
            response_serializer=feedback_pb2.SubmitResponse.SerializeToString,
        )
        batch = grpc.unary_unary_rpc_method_handler(
            self.submit_batch,
            request_deserializer=None,
            response_serializer=feedback_pb2.SubmitBatchResponse.SerializeToString,
        )
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Submit": submit, "SubmitBatch": batch})

    async def submit(self, raw: bytes, context: grpc.aio.ServicerContext) -> feedback_pb2.SubmitResponse:
        metadata = list(context.invocation_metadata() or ())
        request = feedback_pb2.SubmitRequest()
        try:
            request.ParseFromString(raw)
        except DecodeError:
            refusal = invalid("request", "does not parse as a trimtab.v1.SubmitRequest message")
            self._service.refused(refusal)
        else:
            refusal = await self._submit(request, metadata)
            if isinstance(refusal, feedback_pb2.SubmitResponse):
                return refusal
        await _abort(context, refusal)

    async def submit_batch(self, raw: bytes, context: grpc.aio.ServicerContext) -> feedback_pb2.SubmitBatchResponse:
        metadata = list(context.invocation_metadata() or ())
        batch = feedback_pb2.SubmitBatchRequest()
        try:
            batch.ParseFromString(raw)
        except DecodeError:
            refusal = invalid("request", "does not parse as a trimtab.v1.SubmitBatchRequest message")
            self._service.refused(refusal)
            await _abort(context, refusal)
        try:
            outcomes = await self._service.submit_batch(batch.items, credential(metadata), metadata)
        except FeedbackError as error:
            await _abort(context, error)
        return batch_response(outcomes)

    async def _submit(
        self, request: feedback_pb2.SubmitRequest, metadata: list[tuple[str, str | bytes]]
    ) -> feedback_pb2.SubmitResponse | FeedbackError:
        """The acceptance, or the refusal to render."""
        try:
            return await self._service.submit(request, credential(metadata), metadata)
        except FeedbackError as error:
            return error
        except Exception:  # a bug: say so without details, keep serving
            log.exception("Submit failed unexpectedly")
            refusal = internal()
            self._service.refused(refusal)
            return refusal


async def _abort(context: grpc.aio.ServicerContext, refusal: FeedbackError) -> NoReturn:
    if refusal.retry_after_header is not None:
        context.set_trailing_metadata((("retry-after", refusal.retry_after_header),))
    await context.abort(refusal.code, refusal.message)
    raise AssertionError("context.abort returns only by raising")
