"""The OpenAPI 3.1 document of the HTTP/JSON API, derived from the proto descriptors.

One schema: the request and response bodies are the proto messages in protobuf's JSON mapping, so
their schemas are generated from `trimtab.v1` descriptors here, never written by hand. The field
documentation lives in proto/trimtab/v1/feedback.proto and common.proto.
"""

from __future__ import annotations

from typing import Any

from trimtab.openapi import SECURITY, SECURITY_SCHEMES, message_schemas
from trimtab.v1 import feedback_pb2

SUBMIT_PATH = "/v1/feedback"
BATCH_PATH = "/v1/feedback:batch"
OPENAPI_PATH = "/v1/openapi.json"
HEALTH_PATH = "/healthz"

_ERRORS = {
    "400": "INVALID_ARGUMENT: a field is missing, malformed or out of range (the message names it)",
    "401": "UNAUTHENTICATED: missing or unknown API key",
    "403": "PERMISSION_DENIED: the user was not the one served and the tenant does not allow raters",
    "404": "NOT_FOUND: the response is unknown or has expired (a response served moments ago is a 503 instead)",
    "409": "ALREADY_EXISTS: the feedback_id was already used for different feedback",
    "413": "INVALID_ARGUMENT: the request body is larger than the service reads",
    "429": "RESOURCE_EXHAUSTED: a rate limit; retry after the Retry-After header's seconds",
    "503": "UNAVAILABLE: the broker or Redis is unreachable, the same feedback_id is in flight, or a response"
    " served moments ago is not in the response log yet; retry after the Retry-After header's seconds",
}


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    request, response = feedback_pb2.SubmitRequest.DESCRIPTOR, feedback_pb2.SubmitResponse.DESCRIPTOR
    batch, results = feedback_pb2.SubmitBatchRequest.DESCRIPTOR, feedback_pb2.SubmitBatchResponse.DESCRIPTOR
    schemas = message_schemas(request) | message_schemas(response) | {"Error": _error_schema()}
    schemas |= message_schemas(batch) | message_schemas(results)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trimtab FeedbackService (HTTP/JSON)",
            "version": "v1",
            "description": "The gRPC service trimtab.v1.FeedbackService over HTTP: bodies are its messages in "
            "protobuf's JSON mapping (field names as in the proto or lowerCamelCase). Errors carry the same "
            "messages as the gRPC statuses. Field documentation: proto/trimtab/v1/feedback.proto.",
        },
        "paths": {
            SUBMIT_PATH: {"post": _submit_operation(request.full_name, response.full_name)},
            BATCH_PATH: {"post": _batch_operation(batch.full_name, results.full_name)},
        },
        "components": {
            "schemas": schemas,
            "securitySchemes": SECURITY_SCHEMES,
        },
        "security": SECURITY,
    }


def _ref(name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}


def _submit_operation(request: str, response: str) -> dict[str, Any]:
    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
    accepted = {"description": "Accepted (or, for a retry, the original acceptance)", "content": _ref(response)}
    responses: dict[str, Any] = {"200": accepted}
    for code, description in _ERRORS.items():
        responses[code] = {"description": description, "content": _ref("Error")}
        if code in ("429", "503"):
            responses[code]["headers"] = retry_after
    return {
        "operationId": "Submit",
        "summary": "Submit one piece of feedback on a served response; safe to retry with the same feedback_id.",
        "requestBody": {"required": True, "content": _ref(request)},
        "responses": responses,
    }


def _batch_operation(request: str, response: str) -> dict[str, Any]:
    whole = {
        "400": "INVALID_ARGUMENT: no items, more than feedback.max_batch_items, or a feedback_id twice in the batch",
        "401": _ERRORS["401"],
        "413": _ERRORS["413"],
    }
    results = "One result per item, in order: `accepted` (as Submit's 200) or `refused` (Submit's error for it alone)"
    responses: dict[str, Any] = {"200": {"description": results, "content": _ref(response)}}
    responses |= {code: {"description": text, "content": _ref("Error")} for code, text in whole.items()}
    return {
        "operationId": "SubmitBatch",
        "summary": "Submit many pieces of feedback in one call; each item is handled as Submit would handle it.",
        "requestBody": {"required": True, "content": _ref(request)},
        "responses": responses,
    }


def _error_schema() -> dict[str, Any]:
    detail = {
        "type": "object",
        "properties": {
            "code": {"type": "integer", "description": "The HTTP status code."},
            "status": {"type": "string", "description": "The gRPC status name, e.g. NOT_FOUND."},
            "message": {"type": "string", "description": "What is wrong, naming the field where one is."},
        },
        "required": ["code", "status", "message"],
    }
    return {"type": "object", "properties": {"error": detail}, "required": ["error"]}
