"""The OpenAI API's bodies without a server: what is accepted, what is refused and how the refusal names
the field, how a body becomes the GenerateRequest the gRPC face would send, and the OpenAPI document.
(tests/serving/test_openai_api.py sends the same bodies to a real `trimtab serve`.)"""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from pydantic import ValidationError

from serving.generation import Refused
from serving.openai.errors import from_refused, from_validation
from serving.openai.openapi import document
from serving.openai.schema import ChatCompletionRequest, CompletionRequest
from serving.openai.translate import chat_request, completion_request, openai_field
from trimtab.auth import Principal

PRINCIPAL = Principal(key_name="app-key", tenant="acme", allow_raters=False)
CHAT = {"model": "trimtab", "messages": [{"role": "user", "content": "hi"}]}


def refusal(body: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(ValidationError) as raised:
        ChatCompletionRequest.model_validate(body)
    error = from_validation(raised.value)
    assert error.status == 400 and error.body()["error"]["type"] == "invalid_request_error"
    return error.param or "", error.message


@pytest.mark.parametrize(
    ("change", "param", "says"),
    [
        ({"tempreature": 0.5}, "tempreature", "unknown field"),
        ({"temperature": 2.5}, "temperature", "less than or equal to 2"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role", "'system', 'developer'"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages[0]", ""),
        ({"n": 0}, "n", "greater than or equal to 1"),
        ({"tools": [{"type": "function"}]}, "tools", "not supported by trimtab"),
        ({"frequency_penalty": 0.5}, "frequency_penalty", "not supported by trimtab"),
        ({"max_tokens": 8, "max_completion_tokens": 9}, "max_completion_tokens", "differs from max_tokens"),
        ({"top_logprobs": 2}, "top_logprobs", "only with logprobs true"),
        ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", "less than or equal to 20"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only with stream true"),
        ({"seed": 2**63}, "seed", "less than 9223372036854775808"),
        # Beyond the protobuf fields they go into: a 400, not a failure in the translation.
        ({"max_tokens": 2**32}, "max_tokens", "less than or equal to 4294967295"),
        ({"n": 2**32}, "n", "less than or equal to 4294967295"),
        ({"max_completion_tokens": 2**32}, "max_completion_tokens", "less than or equal to 4294967295"),
        ({"steer_targets": {"helpfulness": 2**31}}, "steer_targets.helpfulness", "less than or equal to 2147483647"),
        # A union names the field as the body spells it and what it takes.
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
            "messages[0].content",
            "images and audio are not supported",
        ),
        ({"stop": [1]}, "stop", "must be a string or a list of strings"),
    ],
)
def test_a_wrong_field_is_a_400_that_names_it(change: dict[str, Any], param: str, says: str) -> None:
    named, message = refusal(CHAT | change)
    assert named.startswith(param), message
    assert says in message


def test_a_union_field_refused_is_named_without_pydantics_member_types() -> None:
    for prompt in ([1, 2], ["a", "b"]):
        with pytest.raises(ValidationError) as raised:
            CompletionRequest.model_validate({"model": "trimtab", "prompt": prompt})
        error = from_validation(raised.value)
        assert error.param == "prompt" and "token-id prompts are not supported" in error.message


def test_null_is_a_field_left_at_its_default_as_openais_sdk_sends_it() -> None:
    nulls = {"n": None, "logprobs": None, "stream": None, "stop": None, "max_tokens": None, "stream_options": None}
    body = ChatCompletionRequest.model_validate_json(json.dumps(CHAT | nulls))
    assert (body.n, body.logprobs, body.stream, body.stops(), body.token_limit()) == (1, False, False, [], None)
    completion = CompletionRequest.model_validate({"model": "trimtab", "prompt": "hi", "echo": None, "logprobs": None})
    assert completion.echo is False and completion.logprobs is None


def test_unsupported_features_at_their_defaults_are_accepted_as_clients_send_them() -> None:
    neutral = {"frequency_penalty": 0, "presence_penalty": 0.0, "tools": None, "response_format": {"type": "text"}}
    body = ChatCompletionRequest.model_validate(CHAT | neutral | {"parallel_tool_calls": True, "store": False})
    assert body.messages[0].text() == "hi"


def test_a_body_that_is_not_json_names_the_body() -> None:
    with pytest.raises(ValidationError) as raised:
        ChatCompletionRequest.model_validate_json(b"{not json")
    error = from_validation(raised.value)
    assert error.param == "request body" and "Invalid JSON" in error.message


def test_a_chat_body_becomes_the_generate_request_of_the_grpc_face() -> None:
    body = ChatCompletionRequest.model_validate(
        CHAT
        | {
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Capital of "}, {"type": "text", "text": "France?"}],
                },
            ],
            "max_completion_tokens": 12,
            "temperature": 0,
            "stop": "\n",
            "seed": 7,
            "n": 2,
            "logprobs": True,
            "top_logprobs": 3,
        }
    )
    request, options = chat_request(body, PRINCIPAL, model_name="trimtab")
    assert [(m.role, m.content) for m in request.prompt.chat.messages] == [
        ("system", "Be brief."),
        ("user", "Capital of France?"),
    ]
    assert request.user_id == "app-key" and request.tenant == "acme" and request.n == 2  # user: the key's name
    assert request.sampling.max_tokens == 12 and request.sampling.HasField("temperature")
    assert list(request.sampling.stop) == ["\n"] and request.sampling.seed == 7
    assert not request.sampling.HasField("top_p")  # unset stays unset: serving's defaults apply
    assert options.top_logprobs == 3 and options.version is None


@pytest.mark.parametrize(("seed", "sampled"), [(-1, 2**63 - 1), (-(2**63), 0), (2**63 - 1, 2**63 - 1), (0, 0)])
def test_any_int64_seed_is_taken_as_openai_takes_it(seed: int, sampled: int) -> None:
    """OpenAI's seed is an int64; the proto's is below 2^63: a negative seed samples as its bits without the sign."""
    request, _ = chat_request(
        ChatCompletionRequest.model_validate(CHAT | {"seed": seed}), PRINCIPAL, model_name="trimtab"
    )
    assert request.sampling.seed == sampled


def test_a_version_id_as_model_pins_that_version_and_user_names_who_is_served() -> None:
    body = ChatCompletionRequest.model_validate(CHAT | {"model": "ver_01ABC", "user": "u-7", "logprobs": True})
    request, options = chat_request(body, PRINCIPAL, model_name="trimtab")
    assert options.version == "ver_01ABC" and request.user_id == "u-7"
    assert options.top_logprobs == 0  # logprobs alone: the sampled tokens' only


def test_trimtabs_extensions_carry_a_tenant_and_steerlm_targets_as_over_grpc() -> None:
    body = ChatCompletionRequest.model_validate(CHAT | {"tenant": "guarded", "steer_targets": {"verbosity": 1}})
    request, _ = chat_request(body, PRINCIPAL, model_name="trimtab")
    assert request.tenant == "guarded" and request.steer_targets.verbosity == 1
    assert not request.steer_targets.HasField("helpfulness")
    assert refusal(CHAT | {"steer_targets": {"wit": 3}})[0] == "steer_targets.wit"


def test_a_completion_body_takes_one_text_prompt() -> None:
    body = CompletionRequest.model_validate({"model": "trimtab", "prompt": ["Once upon"], "logprobs": 2, "best_of": 1})
    request, options = completion_request(body, PRINCIPAL, model_name="trimtab")
    assert request.prompt.text == "Once upon" and options.top_logprobs == 2
    for wrong in ({"prompt": ["a", "b"]}, {"prompt": "a", "echo": True}, {"prompt": "a", "best_of": 3}):
        with pytest.raises(ValidationError):
            CompletionRequest.model_validate({"model": "trimtab"} | wrong)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        ("sampling.max_tokens", "max_tokens"),
        ("prompt.chat.messages", "messages"),
        ("prompt.chat.messages[2].role", "messages[2].role"),
        ("user_id", "user"),
        ("prompt", "messages"),
        ("steer_targets.helpfulness", "steer_targets.helpfulness"),
    ],
)
def test_the_shared_paths_field_names_become_the_openai_bodys(ours: str, theirs: str) -> None:
    assert openai_field(ours) == theirs
    assert openai_field("prompt", chat=False) == openai_field("prompt.text") == "prompt"


def test_a_refusal_of_the_shared_path_keeps_its_status_and_names_the_openai_field() -> None:
    limit = from_refused(
        Refused(
            grpc.StatusCode.INVALID_ARGUMENT,
            "sampling.max_tokens: must be between 1 and 128, got 500",
            field="sampling.max_tokens",
            reason="must be between 1 and 128, got 500",
        )
    )
    assert (limit.status, limit.param, limit.message) == (
        400,
        "max_tokens",
        "max_tokens: must be between 1 and 128, got 500",
    )
    newer = ChatCompletionRequest.model_validate(CHAT | {"max_completion_tokens": 500})
    named = from_refused(
        Refused(grpc.StatusCode.INVALID_ARGUMENT, "", field="sampling.max_tokens", reason="must be between 1 and 128"),
        token_field=newer.token_field(),
    )
    assert (named.param, named.message) == ("max_completion_tokens", "max_completion_tokens: must be between 1 and 128")
    unknown = from_refused(Refused(grpc.StatusCode.NOT_FOUND, "version 'x' is not served", field="version"))
    assert (unknown.status, unknown.param, unknown.code) == (404, "model", "model_not_found")
    busy = from_refused(Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, "256 requests in flight"))
    assert busy.status == 429 and busy.retry_after == "1"


def test_the_openapi_document_covers_every_route_and_every_reference_resolves() -> None:
    spec = document("trimtab")
    assert set(spec["paths"]) == {
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/models",
        "/v1/models/{model}",
        "/v1/feedback",
    }
    schemas = spec["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "ChatCompletionChunk", "trimtab.v1.SubmitRequest"} <= set(
        schemas
    )

    def references(node: Any) -> list[str]:
        if isinstance(node, dict):
            own = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return own + [r for value in node.values() for r in references(value)]
        return [r for value in node for r in references(value)] if isinstance(node, list) else []

    refs = references(spec)
    assert refs and all(ref.removeprefix("#/components/schemas/") in schemas for ref in refs)
    assert "response_id" in schemas["ChatChoice"]["properties"]
