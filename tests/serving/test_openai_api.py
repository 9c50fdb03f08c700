"""The OpenAI API of a real `trimtab serve` (vLLM, broker, Redis), spoken to by the official `openai`
package: chat and completions, unary and streamed, sync and async; the same seed gives the same text
as over gRPC; n=2 and then pairwise feedback through POST /v1/feedback to a real FeedbackService,
exactly once; feedback sent the moment each answer arrives is never NOT_FOUND; wrong bodies are clear
400s and the server keeps serving."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
import uuid
from typing import Any

import aiohttp
import grpc
import openai
import pytest

from tests.serving_process import FeedbackProcess, ServingProcess
from trimtab.v1 import common_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration
QUESTION = [{"role": "user", "content": "What colour is a blorb?"}]


@pytest.fixture(scope="module")
def client(serving: ServingProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=serving.openai_url, api_key="unused: auth is off", max_retries=0, timeout=120)


def current_version(client: openai.OpenAI) -> str:
    return next(model.id for model in client.models.list() if model.model_extra["role"] == "current")


def test_models_are_the_served_name_and_the_versions_serving(client: openai.OpenAI) -> None:
    models = {model.id: model.model_extra["role"] for model in client.models.list()}
    assert models["trimtab"] == "router"
    current = current_version(client)
    assert current.startswith("ver_") and client.models.retrieve(current).id == current
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ver_not_served")


def test_a_chat_completion_carries_trimtabs_ids_usage_and_logprobs(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="trimtab", messages=QUESTION, max_tokens=12, temperature=0, logprobs=True, top_logprobs=3
    )
    choice = completion.choices[0]
    assert completion.id.startswith("req_") and choice.model_extra["response_id"].startswith("resp_")
    assert completion.model == current_version(client) == completion.system_fingerprint
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens == len(choice.logprobs.content)
    # Every generated token, the end-of-sequence token included (the text leaves it out), as vLLM's server does.
    assert "".join(token.token for token in choice.logprobs.content).startswith(choice.message.content)
    for token in choice.logprobs.content:
        alternatives = [top.logprob for top in token.top_logprobs]
        assert len(alternatives) == 3 and alternatives == sorted(alternatives, reverse=True)
        assert token.logprob <= 0 and token.bytes == list(token.token.encode())


def test_a_stream_delivers_what_the_unary_call_gives_with_the_same_seed(client: openai.OpenAI) -> None:
    asked = dict(model="trimtab", messages=QUESTION, max_tokens=24, temperature=1.0, seed=11, n=2)
    whole = client.chat.completions.create(**asked)  # type: ignore[call-overload]

    async def streamed() -> tuple[dict[int, str], dict[int, str | None], Any]:
        async with openai.AsyncOpenAI(base_url=client.base_url, api_key="unused", max_retries=0) as aclient:
            stream = await aclient.chat.completions.create(**asked, stream=True, stream_options={"include_usage": True})
            texts: dict[int, str] = {0: "", 1: ""}
            finish: dict[int, str | None] = {}
            usage = None
            async for chunk in stream:
                if chunk.usage is not None:
                    usage = chunk.usage
                for choice in chunk.choices:
                    texts[choice.index] += choice.delta.content or ""
                    finish[choice.index] = choice.finish_reason or finish.get(choice.index)
            return texts, finish, usage

    texts, finish, usage = asyncio.run(streamed())
    assert texts == {choice.index: choice.message.content for choice in whole.choices}
    assert finish == {choice.index: choice.finish_reason for choice in whole.choices}
    assert usage is not None and usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert whole.choices[0].message.content != whole.choices[1].message.content  # seed + index: distinct candidates


def test_the_same_seed_gives_the_same_text_over_grpc_and_http(serving: ServingProcess, client: openai.OpenAI) -> None:
    sampling = common_pb2.SamplingParams(temperature=1.0, top_p=0.9, max_tokens=24, seed=2026)
    request = inference_pb2.GenerateRequest(user_id="parity", sampling=sampling)
    request.prompt.chat.messages.add(role="user", content=QUESTION[0]["content"])
    with grpc.insecure_channel(serving.address) as channel:
        over_grpc = inference_pb2_grpc.InferenceServiceStub(channel).Generate(request, timeout=60)
    over_http = client.chat.completions.create(
        model="trimtab", messages=QUESTION, temperature=1.0, top_p=0.9, max_tokens=24, seed=2026, user="parity"
    )
    assert over_http.choices[0].message.content == over_grpc.candidates[0].text


def test_completions_answer_a_text_prompt_unary_and_streamed(client: openai.OpenAI) -> None:
    asked = dict(model="trimtab", prompt="Once upon a time", max_tokens=10, temperature=0)
    whole = client.completions.create(**asked, logprobs=2)  # type: ignore[call-overload]
    choice = whole.choices[0]
    assert whole.object == "text_completion" and choice.text and choice.model_extra["response_id"].startswith("resp_")
    assert choice.logprobs is not None and "".join(choice.logprobs.tokens or []).startswith(choice.text)
    assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs or [])
    pieces = [c.choices[0].text for c in client.completions.create(**asked, stream=True)]  # type: ignore[call-overload]
    assert "".join(pieces) == choice.text


def test_a_version_id_as_model_is_served_by_that_version(client: openai.OpenAI) -> None:
    current = current_version(client)
    pinned = client.chat.completions.create(model=current, messages=QUESTION, max_tokens=4)
    assert pinned.model == current
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="ver_retired_long_ago", messages=QUESTION, max_tokens=4)
    assert raised.value.code == "model_not_found" and "ver_retired_long_ago" in raised.value.message


def submit_feedback(client: openai.OpenAI, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/feedback through the SDK's own client (its errors, its auth header)."""
    return dict(client.post("/feedback", body=body, cast_to=object))  # type: ignore[call-overload]


def test_n2_then_pairwise_feedback_is_accepted_once(client: openai.OpenAI, feedback: FeedbackProcess) -> None:
    user = f"openai-{uuid.uuid4().hex[:8]}"
    answered = client.chat.completions.create(model="trimtab", messages=QUESTION, n=2, max_tokens=16, user=user)
    first, second = (choice.model_extra["response_id"] for choice in answered.choices)
    assert answered.model_extra["user"] == user
    vote = {
        "feedback_id": f"{user}-pair",
        "user_id": user,
        "label": {"pairwise": {"chosen_response_id": second, "rejected_response_id": first}},
    }
    accepted = submit_feedback(client, vote)
    assert accepted["feedback_id"] == vote["feedback_id"] and accepted["replayed"] is False
    again = submit_feedback(client, vote)  # a retry: the original acceptance, nothing new written
    assert again["replayed"] is True and again["event_id"] == accepted["event_id"]
    changed = vote | {"label": {"pairwise": {"chosen_response_id": first, "rejected_response_id": second}}}
    with pytest.raises(openai.ConflictError):  # the same id for different feedback
        submit_feedback(client, changed)
    with pytest.raises(openai.PermissionDeniedError):  # only the user who was served may judge
        submit_feedback(client, vote | {"feedback_id": f"{user}-other", "user_id": "someone-else"})


ANSWERS = 24


def test_feedback_the_moment_each_answer_arrives_is_never_not_found(
    serving: ServingProcess, feedback: FeedbackProcess
) -> None:
    """Eight clients each judge every answer the moment it arrives, through POST /v1/feedback, with no
    retry on 404: a fresh response is waited for (or 503 with Retry-After, then accepted on retry)."""
    user = f"eager-{uuid.uuid4().hex[:6]}"

    async def answer_then_judge(http: aiohttp.ClientSession, index: int) -> list[int]:
        body = {"model": "trimtab", "messages": QUESTION, "max_tokens": 8, "user": user}
        async with http.post(f"{serving.openai_url}/chat/completions", json=body) as answer:
            response_id = (await answer.json())["choices"][0]["response_id"]
        vote = {
            "feedback_id": f"{user}-{index}",
            "user_id": user,
            "response_id": response_id,
            "label": {"thumb": "THUMB_UP"},
        }
        statuses = []
        for _ in range(5):
            async with http.post(f"{serving.openai_url}/feedback", json=vote) as judged:
                statuses.append(judged.status)
                if judged.status != 503:
                    break
                await asyncio.sleep(float(judged.headers["Retry-After"]))
        return statuses

    async def everyone() -> list[list[int]]:
        async with aiohttp.ClientSession() as http:
            gate = asyncio.Semaphore(8)

            async def one(index: int) -> list[int]:
                async with gate:
                    return await answer_then_judge(http, index)

            return list(await asyncio.gather(*(one(i) for i in range(ANSWERS))))

    outcomes = asyncio.run(everyone())
    assert all(statuses[-1] == 200 for statuses in outcomes), outcomes
    assert not any(404 in statuses for statuses in outcomes)


def post(serving: ServingProcess, path: str, body: bytes | dict[str, Any], method: str = "POST") -> tuple[int, Any]:
    """A raw request, so that bodies the SDK would never send can be sent; (status, parsed JSON body)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(f"{serving.openai_url}{path}", data=raw or None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("path", "body", "status", "param"),
    [
        ("/chat/completions", b"{not json", 400, "request body"),
        ("/chat/completions", {"model": "trimtab", "messages": QUESTION, "colour": "red"}, 400, "colour"),
        (
            "/chat/completions",
            {"model": "trimtab", "messages": [{"role": "tool", "content": "x"}]},
            400,
            "messages[0].role",
        ),
        ("/chat/completions", {"model": "trimtab", "messages": QUESTION, "max_tokens": 5000}, 400, "max_tokens"),
        ("/chat/completions", {"model": "trimtab", "messages": QUESTION, "max_tokens": 2**32}, 400, "max_tokens"),
        (
            "/chat/completions",
            {"model": "trimtab", "messages": QUESTION, "max_completion_tokens": 5000},
            400,
            "max_completion_tokens",
        ),
        (
            "/chat/completions",
            {"model": "trimtab", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            400,
            "messages[0].content",
        ),
        ("/chat/completions", {"model": "trimtab", "messages": QUESTION, "n": 9}, 400, "n"),
        (
            "/chat/completions",
            {"model": "trimtab", "messages": [{"role": "assistant", "content": "hi"}]},
            400,
            "messages",
        ),
        (
            "/chat/completions",
            {"model": "trimtab", "messages": QUESTION, "tools": [{"type": "function"}]},
            400,
            "tools",
        ),
        ("/chat/completions", {"messages": QUESTION}, 400, "model"),
        ("/completions", {"model": "trimtab", "prompt": "   "}, 400, "prompt"),
        ("/feedback", {"feedback_id": "x", "colour": 1}, 400, "request body"),
        ("/chat/completion", {"model": "trimtab"}, 404, None),
    ],
)
def test_a_wrong_request_is_a_clear_error_in_openais_shape(
    serving: ServingProcess, path: str, body: bytes | dict[str, Any], status: int, param: str | None
) -> None:
    got, answer = post(serving, path, body)
    assert got == status, answer
    error = answer["error"]
    assert error["param"] == param and error["message"] and error["type"].endswith("_error")


def test_null_fields_are_taken_as_their_defaults(serving: ServingProcess) -> None:
    nulls = {"n": None, "logprobs": None, "stream": None, "stop": None, "temperature": None}
    body = {"model": "trimtab", "messages": QUESTION, "max_tokens": 4} | nulls
    status, answer = post(serving, "/chat/completions", body)
    assert status == 200 and len(answer["choices"]) == 1 and answer["choices"][0]["logprobs"] is None, answer


def test_after_every_wrong_request_the_server_still_answers(serving: ServingProcess, client: openai.OpenAI) -> None:
    status, answer = post(serving, "/chat/completions", b"x" * (2 << 20))  # over serving.openai.max_request_bytes
    assert status == 413 and answer["error"]["type"] == "invalid_request_error"
    status, _ = post(serving, "/chat/completions", b"", method="GET")
    assert status == 405
    assert client.chat.completions.create(model="trimtab", messages=QUESTION, max_tokens=4).choices[0].message.content


def test_the_openapi_document_is_served(serving: ServingProcess) -> None:
    status, spec = post(serving, "/openapi.json", b"", method="GET")
    assert status == 200 and "/v1/feedback" in spec["paths"] and "/v1/chat/completions" in spec["paths"]
