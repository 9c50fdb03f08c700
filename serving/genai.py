"""A generation request in OpenTelemetry's GenAI semantic conventions: the span's name and attributes,
and the attributes of the `gen_ai.server.*` metrics.

Pinned: the GenAI conventions as `opentelemetry-semantic-conventions` 0.66b2 (schema 1.44.0) names
them; the names are imported from it, never spelled here. The span is `{operation} {model}`
(`chat trimtab`, `text_completion ver_...`): operation from the prompt's kind, model from what the
client asked (`serving.openai.model_name`, or the version it pinned); the answering version is
`gen_ai.response.model`. trimtab is the provider (`gen_ai.provider.name`): the model is the
operator's own, served by trimtab.
"""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.semconv._incubating.attributes.gen_ai_attributes import (
    GEN_AI_OPERATION_NAME,
    GEN_AI_PROVIDER_NAME,
    GEN_AI_REQUEST_CHOICE_COUNT,
    GEN_AI_REQUEST_MAX_TOKENS,
    GEN_AI_REQUEST_MODEL,
    GEN_AI_REQUEST_SEED,
    GEN_AI_REQUEST_TEMPERATURE,
    GEN_AI_REQUEST_TOP_P,
    GEN_AI_RESPONSE_FINISH_REASONS,
    GEN_AI_RESPONSE_ID,
    GEN_AI_RESPONSE_MODEL,
    GEN_AI_USAGE_INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS,
)
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE

from trimtab.v1 import inference_pb2

PROVIDER = "trimtab"
Attributes = dict[str, str | int | float | Sequence[str]]


def operation(request: inference_pb2.GenerateRequest) -> str:
    return "chat" if request.prompt.WhichOneof("kind") == "chat" else "text_completion"


def request_attributes(request: inference_pb2.GenerateRequest, model: str) -> Attributes:
    """What the client asked, known before admission (so a refused request's span has them too)."""
    attributes: Attributes = {
        GEN_AI_OPERATION_NAME: operation(request),
        GEN_AI_PROVIDER_NAME: PROVIDER,
        GEN_AI_REQUEST_MODEL: model,
        GEN_AI_REQUEST_CHOICE_COUNT: max(1, request.n),
    }
    sampling = request.sampling
    if sampling.HasField("max_tokens"):
        attributes[GEN_AI_REQUEST_MAX_TOKENS] = sampling.max_tokens
    if sampling.HasField("temperature"):
        attributes[GEN_AI_REQUEST_TEMPERATURE] = sampling.temperature
    if sampling.HasField("top_p"):
        attributes[GEN_AI_REQUEST_TOP_P] = sampling.top_p
    if sampling.HasField("seed"):
        attributes[GEN_AI_REQUEST_SEED] = sampling.seed
    return attributes


def span_name(attributes: Attributes) -> str:
    return f"{attributes[GEN_AI_OPERATION_NAME]} {attributes[GEN_AI_REQUEST_MODEL]}"


def response_attributes(
    *, request_id: str, version: str, finish_reasons: Sequence[str], input_tokens: int, output_tokens: int
) -> Attributes:
    return {
        GEN_AI_RESPONSE_ID: request_id,
        GEN_AI_RESPONSE_MODEL: version,
        GEN_AI_RESPONSE_FINISH_REASONS: list(finish_reasons),
        GEN_AI_USAGE_INPUT_TOKENS: input_tokens,
        GEN_AI_USAGE_OUTPUT_TOKENS: output_tokens,
    }


def metric_attributes(request_attributes: Attributes, version: str, error: str | None = None) -> dict[str, str]:
    """The low-cardinality set the conventions give the gen_ai.server.* metrics."""
    attributes = {
        GEN_AI_OPERATION_NAME: str(request_attributes[GEN_AI_OPERATION_NAME]),
        GEN_AI_PROVIDER_NAME: PROVIDER,
        GEN_AI_REQUEST_MODEL: str(request_attributes[GEN_AI_REQUEST_MODEL]),
        GEN_AI_RESPONSE_MODEL: version,
    }
    if error is not None:
        attributes[ERROR_TYPE] = error
    return attributes
