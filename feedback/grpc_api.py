"""FeedbackService over gRPC: Submit, with FeedbackError rendered as a status, message and retry-after.

The method handler takes the raw request bytes and parses them itself, so a message that does not
parse is INVALID_ARGUMENT naming the message, not the INTERNAL that gRPC's own deserializer failure
would give. RESOURCE_EXHAUSTED and UNAVAILABLE carry a `retry-after` trailer (whole seconds).
"""

from __future__ import annotations

import logging

import grpc
from google.protobuf.message import DecodeError

from feedback.errors import FeedbackError, invalid
from feedback.service import FeedbackService
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
        return grpc.method_handlers_generic_handler(SERVICE_NAME, {"Submit": submit})

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
        if refusal.retry_after_header is not None:
            context.set_trailing_metadata((("retry-after", refusal.retry_after_header),))
        await context.abort(refusal.code, refusal.message)
        raise AssertionError("context.abort returns only by raising")

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
            refusal = FeedbackError(grpc.StatusCode.INTERNAL, "internal error", "internal")
            self._service.refused(refusal)
            return refusal
