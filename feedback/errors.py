"""The service's refusals: one gRPC status and message per case, and the HTTP code for each status.

Both transports raise and render the same `FeedbackError`, so a case has the same message whether it
arrived over gRPC or HTTP/JSON. `reason` is a short, stable label for the rejected-by-reason metric.
"""

from __future__ import annotations

import math

import grpc

from trimtab.status import HTTP_STATUS
from trimtab.v1 import feedback_pb2


class FeedbackError(Exception):
    """A submission refused with a gRPC status; the message alone tells the caller what to fix."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str,
        retry_after_s: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.retry_after_s = retry_after_s
        self._http_status = http_status

    @property
    def http_status(self) -> int:
        """The status's HTTP code, unless the case has a more precise one (413 for an oversize body)."""
        return self._http_status or HTTP_STATUS[self.code]

    @property
    def retry_after_header(self) -> str | None:
        """Whole seconds, rounded up, as HTTP Retry-After and the gRPC `retry-after` trailer carry it."""
        if self.retry_after_s is None:
            return None
        return str(max(1, math.ceil(self.retry_after_s)))

    def refusal(self) -> feedback_pb2.Refusal:
        """This refusal as one SubmitBatch item's result."""
        retry = self.retry_after_header
        return feedback_pb2.Refusal(
            status=self.code.name,
            http_status=self.http_status,
            message=self.message,
            retry_after_s=int(retry) if retry else 0,
        )


def internal() -> FeedbackError:
    """A bug: the caller learns nothing about it, the log has the traceback."""
    return FeedbackError(grpc.StatusCode.INTERNAL, "internal error", "internal")


def invalid(field: str, problem: str) -> FeedbackError:
    """INVALID_ARGUMENT naming the field, e.g. `label.rating: must be 1 to 5, got 9`."""
    return FeedbackError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {problem}", "invalid_argument")


def too_large(limit_bytes: int) -> FeedbackError:
    """An HTTP body over the size the service reads: 413 over HTTP (gRPC enforces its own limit)."""
    message = f"request body: at most {limit_bytes} bytes"
    return FeedbackError(grpc.StatusCode.INVALID_ARGUMENT, message, "invalid_argument", http_status=413)


def not_found(message: str) -> FeedbackError:
    return FeedbackError(grpc.StatusCode.NOT_FOUND, message, "not_found")


def record_pending(field: str, response_id: str) -> FeedbackError:
    """A response serving minted moments ago whose record has not landed yet: UNAVAILABLE, never NOT_FOUND.
    Serving retries a failed record write every `serving.record_retry_s` (1 s): hence retry-after 1."""
    message = (
        f"{field}: response {response_id!r} has no record yet (serving writes it just after the reply);"
        " retry with the same feedback_id"
    )
    return FeedbackError(grpc.StatusCode.UNAVAILABLE, message, "record_pending", retry_after_s=1)


def permission_denied(message: str) -> FeedbackError:
    return FeedbackError(grpc.StatusCode.PERMISSION_DENIED, message, "permission_denied")


def unauthenticated(message: str) -> FeedbackError:
    return FeedbackError(grpc.StatusCode.UNAUTHENTICATED, message, "unauthenticated")


def already_exists(message: str) -> FeedbackError:
    return FeedbackError(grpc.StatusCode.ALREADY_EXISTS, message, "already_exists")


def rate_limited(scope: str, retry_after_s: float) -> FeedbackError:
    wait = max(1, math.ceil(retry_after_s))
    message = f"too many submissions for this {scope}: retry after {wait} s"
    return FeedbackError(grpc.StatusCode.RESOURCE_EXHAUSTED, message, f"rate_limited_{scope.replace(' ', '_')}", wait)


def unavailable(message: str, retry_after_s: float | None = None) -> FeedbackError:
    return FeedbackError(grpc.StatusCode.UNAVAILABLE, message, "unavailable", retry_after_s)
