"""The OpenAPI 3.1 document of the OpenAI port, generated from the bodies it parses and builds (pydantic
models and TypedDicts in serving/openai/schema.py) and, for /v1/feedback, from the proto descriptors."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from serving.openai.schema import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    Error,
    Model,
    ModelList,
)
from trimtab.openapi import SECURITY, SECURITY_SCHEMES, message_schemas
from trimtab.v1 import feedback_pb2

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MODELS_PATH = "/v1/models"
FEEDBACK_PATH = "/v1/feedback"
OPENAPI_PATH = "/v1/openapi.json"
REF = "#/components/schemas/{model}"
ERRORS = {
    "400": "A field is missing, malformed, out of range or unknown (`param` names it)",
    "401": "Missing or unknown API key",
    "403": "The API key may not act for this tenant, or (feedback) the user was not the one served",
    "404": "`model` names no version served here (code model_not_found); feedback: an unknown or expired response",
    "409": "Feedback: the feedback_id was already used for different feedback",
    "413": "The request body is larger than serving.openai.max_request_bytes",
    "429": "Too many requests in flight (serving.max_inflight) or a feedback rate limit; see Retry-After",
    "503": "The engine stopped, the server is draining, or (feedback) the response is not logged yet; see Retry-After",
}


def _schemas() -> dict[str, Any]:
    """Every body's JSON schema under components/schemas, their nested definitions hoisted beside them."""
    schemas: dict[str, Any] = {}
    for model in (ChatCompletionRequest, CompletionRequest):
        schema = model.model_json_schema(ref_template=REF)
        schemas |= schema.pop("$defs", {})
        schemas[model.__name__] = schema
    for shape in (ChatCompletion, ChatCompletionChunk, Completion, Model, ModelList, Error):
        schema = TypeAdapter(shape).json_schema(ref_template=REF)
        schemas |= schema.pop("$defs", {})
        schemas[shape.__name__] = schema
    submit, accepted = feedback_pb2.SubmitRequest.DESCRIPTOR, feedback_pb2.SubmitResponse.DESCRIPTOR
    return schemas | message_schemas(submit) | message_schemas(accepted)


def _content(name: str, media: str = "application/json") -> dict[str, Any]:
    return {media: {"schema": {"$ref": REF.format(model=name)}}}


def _operation(operation_id: str, summary: str, request: str | None, response: dict[str, Any]) -> dict[str, Any]:
    responses: dict[str, Any] = {"200": response}
    for code, description in ERRORS.items():
        responses[code] = {"description": description, "content": _content("Error")}
        if code in ("429", "503"):
            retry = {"schema": {"type": "integer"}, "description": "Seconds to wait before retrying."}
            responses[code]["headers"] = {"Retry-After": retry}
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary, "responses": responses}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": _content(request)}
    return operation


def document(model_name: str) -> dict[str, Any]:
    """The whole OpenAPI document."""
    streamed = "With `stream: true`, server-sent events of {} objects, then `data: [DONE]`."
    chat = {
        "description": f"The completion. {streamed.format('ChatCompletionChunk')}",
        "content": _content("ChatCompletion") | _content("ChatCompletionChunk", "text/event-stream"),
    }
    text = {
        "description": f"The completion. {streamed.format('Completion')}",
        "content": _content("Completion") | _content("Completion", "text/event-stream"),
    }
    submitted = {
        "description": "Accepted (or, for a retry, the original acceptance)",
        "content": _content(feedback_pb2.SubmitResponse.DESCRIPTOR.full_name),
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "trimtab serving: the OpenAI-compatible API",
            "version": "v1",
            "description": (
                f"OpenAI's chat completions, completions and models APIs over trimtab's serving (the same engine,"
                f" canary routing, guardrails and response log as its gRPC InferenceService), plus feedback."
                f" `model` is {model_name!r} (routed as usual) or a version id from /v1/models (pinned). Each"
                " choice carries `response_id`, which feedback names; `user` (default: the API key's name) is"
                " who may give it. POST /v1/feedback takes FeedbackService's SubmitRequest in protobuf's JSON"
                " mapping (field documentation: proto/trimtab/v1/feedback.proto)."
            ),
        },
        "paths": {
            CHAT_PATH: {"post": _operation("createChatCompletion", "Chat completion", "ChatCompletionRequest", chat)},
            COMPLETIONS_PATH: {"post": _operation("createCompletion", "Text completion", "CompletionRequest", text)},
            MODELS_PATH: {
                "get": _operation(
                    "listModels",
                    "Served name, current version, canary",
                    None,
                    {"description": "The models", "content": _content("ModelList")},
                )
            },
            MODELS_PATH + "/{model}": {
                "get": _operation(
                    "retrieveModel",
                    "One of /v1/models",
                    None,
                    {"description": "The model", "content": _content("Model")},
                )
                | {"parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}]}
            },
            FEEDBACK_PATH: {
                "post": _operation(
                    "submitFeedback",
                    "FeedbackService.Submit: feedback on a served response; safe to retry with the same feedback_id",
                    feedback_pb2.SubmitRequest.DESCRIPTOR.full_name,
                    submitted,
                )
            },
        },
        "components": {"schemas": _schemas(), "securitySchemes": SECURITY_SCHEMES},
        "security": SECURITY,
    }
