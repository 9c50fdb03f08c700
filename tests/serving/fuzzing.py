"""Hypothesis strategies for serving's surfaces (gRPC messages, OpenAI bodies), shared by the fuzz tests of
serving (tests/serving/test_fuzz.py) and of the router in front of it (tests/serving/test_router.py)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.json_fuzz import edited
from trimtab.v1 import common_pb2, inference_pb2

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS}
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
TEXT = st.text(max_size=60)
DOUBLES = st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.floats(min_value=0, max_value=2)
# Mostly a few tokens (each example generates); now and then out of range.
MAX_TOKENS = st.none() | st.integers(min_value=0, max_value=3) | st.sampled_from([129, 2**32 - 1])


def prompts() -> st.SearchStrategy[common_pb2.Prompt]:
    role = st.sampled_from(["user", "assistant", "system", "developer", ""]) | TEXT
    messages = st.lists(st.builds(common_pb2.ChatMessage, role=role, content=TEXT), max_size=3)
    return st.one_of(
        st.just(common_pb2.Prompt()),
        st.builds(common_pb2.Prompt, text=TEXT),
        messages.map(lambda chat: common_pb2.Prompt(chat=common_pb2.Chat(messages=chat))),
    )


def sampling(
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    max_tokens: int | None,
    stop: list[str],
    seed: int | None,
) -> common_pb2.SamplingParams:
    params = common_pb2.SamplingParams(stop=stop)
    for name, value in (("temperature", temperature), ("top_p", top_p), ("top_k", top_k)):
        if value is not None:
            setattr(params, name, value)
    if max_tokens is not None:
        params.max_tokens = max_tokens
    if seed is not None:
        params.seed = seed
    return params


def requests() -> st.SearchStrategy[inference_pb2.GenerateRequest]:
    params = st.builds(
        sampling,
        temperature=DOUBLES,
        top_p=DOUBLES,
        top_k=st.none() | INT32,
        max_tokens=MAX_TOKENS,
        stop=st.lists(TEXT, max_size=5),
        seed=st.none() | st.integers(min_value=0, max_value=2**64 - 1),
    )
    steer = st.builds(common_pb2.SteerLMAttributes, helpfulness=st.none() | INT32, toxicity=st.none() | INT32)
    return st.builds(
        inference_pb2.GenerateRequest,
        prompt=prompts(),
        sampling=params,
        n=st.integers(min_value=0, max_value=5) | st.just(2**32 - 1),
        steer_targets=st.none() | steer,
        user_id=TEXT,
        tenant=st.sampled_from(["", "default", "nobody"]) | TEXT,
    )


def plausible() -> st.SearchStrategy[inference_pb2.GenerateRequest]:
    """Requests within every limit, with odd text: these reach generation."""
    params = st.builds(
        sampling,
        temperature=st.floats(min_value=0, max_value=2),
        top_p=st.floats(min_value=0.05, max_value=1),
        top_k=st.none() | st.integers(min_value=1, max_value=50),
        max_tokens=st.integers(min_value=1, max_value=3),
        stop=st.lists(st.text(min_size=1, max_size=10), max_size=3),
        seed=st.none() | st.integers(min_value=0, max_value=2**63 - 1),
    )
    chat = st.lists(st.builds(common_pb2.ChatMessage, role=st.just("user"), content=TEXT), min_size=1, max_size=2)
    prompt = chat.map(lambda messages: common_pb2.Prompt(chat=common_pb2.Chat(messages=messages)))
    return st.builds(
        inference_pb2.GenerateRequest,
        prompt=prompt | st.builds(common_pb2.Prompt, text=st.text(min_size=1, max_size=60)),
        sampling=params,
        n=st.integers(min_value=1, max_value=2),
        user_id=TEXT,
    )


def http_call(url: str, body: bytes, method: str = "POST") -> tuple[int, bytes]:
    """The status and body of an HTTP call, whatever the status."""
    request = urllib.request.Request(url, data=body, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


CHAT = {"model": "trimtab", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
COMPLETION = {"model": "trimtab", "prompt": "Once upon", "max_tokens": 2}
KEYS = [
    *("model", "messages", "prompt", "max_tokens", "n", "temperature", "top_p", "stop", "seed", "stream", "user"),
    *("tenant", "logprobs", "top_logprobs", "steer_targets", "stream_options", "best_of", "echo", "extra"),
]


def openai_bodies(base: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """An OpenAI API body with up to three fields replaced by any JSON, removed or added."""
    return edited(st.just(base), st.sampled_from(KEYS))
