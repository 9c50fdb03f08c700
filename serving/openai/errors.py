"""Errors in OpenAI's shape, `{"error": {"message", "type", "param", "code"}}`, with the HTTP code the
gRPC face's status maps to (trimtab.status) and the message the gRPC face would give."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc
from aiohttp import web
from pydantic import ValidationError

from serving.generation import Refused
from serving.openai.schema import Error
from serving.openai.translate import openai_field
from trimtab.status import HTTP_STATUS

log = logging.getLogger(__name__)
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    501: "not_implemented_error",
    503: "service_unavailable_error",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after  # seconds, as the Retry-After header carries them

    def body(self) -> Error:
        kind = ERROR_TYPES.get(self.status, "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> web.Response:
        headers = {"Retry-After": self.retry_after} if self.retry_after else None
        return web.json_response(self.body(), status=self.status, headers=headers)


def invalid(param: str, reason: str) -> ApiError:
    return ApiError(400, f"{param}: {reason}", param=param, code="invalid_argument")


def from_status(code: grpc.StatusCode, message: str, retry_after: str | None = None) -> ApiError:
    return ApiError(HTTP_STATUS.get(code, 500), message, code=code.name.lower(), retry_after=retry_after)


def from_refused(refused: Refused, chat: bool = True, token_field: str = "max_tokens") -> ApiError:
    if refused.field is None:
        error = from_status(refused.code, refused.message)
        if refused.code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            error.retry_after = "1"
        return error
    param = openai_field(refused.field, chat, token_field)
    message = f"{param}: {refused.reason}" if refused.reason else refused.message
    code = "model_not_found" if param == "model" else refused.code.name.lower()
    return ApiError(HTTP_STATUS[refused.code], message, param=param, code=code)


def from_validation(exc: ValidationError) -> ApiError:
    """The first thing wrong with a body, naming its field as a client writes it (`messages[0].role`)."""
    first = exc.errors(include_url=False)[0]
    param = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
    reason = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        reason = "unknown field"
    if first["type"] == "value_error" and ": " in reason and not param:  # a body-level check names its field
        param, reason = reason.split(": ", 1)
    return invalid(param or "request body", reason)


@web.middleware
async def openai_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in OpenAI's shape, including aiohttp's own (unknown path, wrong method, body too large);
    an unexpected failure is a 500 that says nothing of its internals, and the server keeps serving."""
    try:
        return await handler(request)
    except ApiError as error:
        return error.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return ApiError(exc.status, exc.reason or "error", code=exc.reason.lower().replace(" ", "_")).response()
    except Exception:
        log.exception("%s %s failed unexpectedly", request.method, request.path)
        return ApiError(500, "internal error (see the server log)", code="internal").response()
