"""The OpenAPI 3.1 document of the HTTP/JSON API, derived from the proto descriptors.

One schema: the request and response bodies are the proto messages in protobuf's JSON mapping, so
their schemas are generated from `trimtab.v1` descriptors here, never written by hand. The field
documentation lives in proto/trimtab/v1/feedback.proto and common.proto.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from trimtab.v1 import feedback_pb2

SUBMIT_PATH = "/v1/feedback"
OPENAPI_PATH = "/v1/openapi.json"
HEALTH_PATH = "/healthz"

_SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "uint32", "minimum": 0},
    FieldDescriptor.TYPE_FIXED32: {"type": "integer", "format": "uint32", "minimum": 0},
    # proto3 JSON writes 64-bit integers as strings (and reads either).
    FieldDescriptor.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": ["string", "integer"], "format": "uint64"},
    FieldDescriptor.TYPE_FIXED64: {"type": ["string", "integer"], "format": "uint64"},
}
_WELL_KNOWN = {"google.protobuf.Timestamp": {"type": "string", "format": "date-time"}}
_ERRORS = {
    "400": "INVALID_ARGUMENT: a field is missing, malformed or out of range (the message names it)",
    "401": "UNAUTHENTICATED: missing or unknown API key",
    "403": "PERMISSION_DENIED: the user was not the one served and the tenant does not allow raters",
    "404": "NOT_FOUND: the response is unknown or has expired",
    "409": "ALREADY_EXISTS: the feedback_id was already used for different feedback",
    "413": "INVALID_ARGUMENT: the request body is larger than the service reads",
    "429": "RESOURCE_EXHAUSTED: a rate limit; retry after the Retry-After header's seconds",
    "503": "UNAVAILABLE: the broker or Redis is unreachable, or the same feedback_id is in flight; retry it",
}


def message_schemas(root: Descriptor) -> dict[str, dict[str, Any]]:
    """JSON schemas of `root` and every message it contains, by full name."""
    schemas: dict[str, dict[str, Any]] = {}
    pending = [root]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in schemas or descriptor.full_name in _WELL_KNOWN:
            continue
        properties = {field.name: _field_schema(field) for field in descriptor.fields}
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        oneofs = [o for o in descriptor.oneofs if not o.name.startswith("_")]  # "_x": proto3 optional
        if oneofs:
            names = "; ".join(f"{o.name}: one of {', '.join(f.name for f in o.fields)}" for o in oneofs)
            schema["description"] = f"At most one field of each oneof is set ({names})."
        schemas[descriptor.full_name] = schema
        pending += [f.message_type for f in descriptor.fields if f.message_type is not None]
    return schemas


def _field_schema(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        value = field.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _single(value)}
    single = _single(field)
    return {"type": "array", "items": single} if field.is_repeated else single


def _single(field: FieldDescriptor) -> dict[str, Any]:
    if field.message_type is not None:
        name = field.message_type.full_name
        return dict(_WELL_KNOWN[name]) if name in _WELL_KNOWN else {"$ref": f"#/components/schemas/{name}"}
    if field.enum_type is not None:
        return {"type": "string", "enum": [value.name for value in field.enum_type.values]}
    return dict(_SCALARS[field.type])


def document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    request, response = feedback_pb2.SubmitRequest.DESCRIPTOR, feedback_pb2.SubmitResponse.DESCRIPTOR
    schemas = message_schemas(request) | message_schemas(response) | {"Error": _error_schema()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trimtab FeedbackService (HTTP/JSON)",
            "version": "v1",
            "description": "The gRPC service trimtab.v1.FeedbackService over HTTP: bodies are its messages in "
            "protobuf's JSON mapping (field names as in the proto or lowerCamelCase). Errors carry the same "
            "messages as the gRPC statuses. Field documentation: proto/trimtab/v1/feedback.proto.",
        },
        "paths": {SUBMIT_PATH: {"post": _submit_operation(request.full_name, response.full_name)}},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
        "security": [{"bearer": []}, {"apiKey": []}, {}],  # {}: no key while auth is off
    }


def _submit_operation(request: str, response: str) -> dict[str, Any]:
    def ref(name: str) -> dict[str, Any]:
        return {"application/json": {"schema": {"$ref": f"#/components/schemas/{name}"}}}

    retry_after = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}}
    accepted = {"description": "Accepted (or, for a retry, the original acceptance)", "content": ref(response)}
    responses: dict[str, Any] = {"200": accepted}
    for code, description in _ERRORS.items():
        responses[code] = {"description": description, "content": ref("Error")}
        if code in ("429", "503"):
            responses[code]["headers"] = retry_after
    return {
        "operationId": "Submit",
        "summary": "Submit one piece of feedback on a served response; safe to retry with the same feedback_id.",
        "requestBody": {"required": True, "content": ref(request)},
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
