"""InferenceService through the real `trimtab serve` process: candidates, streaming, the response log,
and a clear INVALID_ARGUMENT for every bad field, after which the service keeps serving."""

from __future__ import annotations

import asyncio
import re
import uuid

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer, TopicPartition

from tests.serving_process import ServingProcess, seeded_load
from trimtab.events import receive
from trimtab.ids import id_time_ms
from trimtab.records import ResponseStore, redis_client
from trimtab.v1 import admin_pb2, admin_pb2_grpc, common_pb2, events_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration


def chat_request(text: str = "What is 3 plus 5?", **fields: object) -> inference_pb2.GenerateRequest:
    request = inference_pb2.GenerateRequest(user_id=fields.pop("user_id", "user-1"), **fields)  # type: ignore[arg-type]
    request.prompt.chat.messages.add(role="user", content=text)
    return request


def greedy(max_tokens: int = 24) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(temperature=0.0, max_tokens=max_tokens)


def test_generate_returns_n_logged_candidates_with_versions_and_counts(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    reply = stub.Generate(chat_request(n=2, sampling=common_pb2.SamplingParams(seed=7, max_tokens=32)), timeout=60)
    assert [c.index for c in reply.candidates] == [0, 1]
    ids = [c.response_id for c in reply.candidates]
    assert len(set(ids)) == 2 and all(i.startswith("resp_") for i in ids)
    assert id_time_ms(ids[0]) <= id_time_ms(ids[1]) <= id_time_ms(reply.request_id) + 60_000
    current = admin_pb2_grpc.AdminServiceStub(channel).GetStatus(admin_pb2.GetStatusRequest()).status.current_version_id
    assert current.startswith("ver_")  # model.path, imported into the registry as the first version
    for candidate in reply.candidates:
        assert candidate.model_version == current
        assert [(s.version_id, s.token_start) for s in candidate.version_spans] == [(current, 0)]
        assert candidate.version_spans[-1].token_end == candidate.completion_tokens > 0
        assert candidate.prompt_tokens > 0
        assert candidate.finish_reason in (inference_pb2.FINISH_REASON_STOP, inference_pb2.FINISH_REASON_LENGTH)
    again = stub.Generate(chat_request(n=2, sampling=common_pb2.SamplingParams(seed=7, max_tokens=32)), timeout=60)
    assert [c.text for c in again.candidates] == [c.text for c in reply.candidates]  # seeded: reproducible


def test_stream_deltas_join_to_the_final_candidate(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    chunks = list(stub.GenerateStream(chat_request("What colour is a blorb?", n=2, sampling=greedy(40)), timeout=60))
    for index in (0, 1):
        mine = [c for c in chunks if c.index == index]
        finals = [c.final for c in mine if c.HasField("final")]
        assert len(finals) == 1 and mine[-1].HasField("final")
        assert "".join(c.text_delta for c in mine) == finals[0].text
        assert {c.response_id for c in mine} == {finals[0].response_id}
    unary = stub.Generate(chat_request("What colour is a blorb?", sampling=greedy(40)), timeout=60)
    assert unary.candidates[0].text == next(c.final.text for c in chunks if c.HasField("final"))


@pytest.mark.parametrize(
    ("text", "max_tokens"),
    [
        ("Écris une phrase avec des accents : é, è, ê, à, ç.", 23),
        ("写一首关于春天的短诗。", 17),
        ("Reply with three emoji and nothing else.", 9),
        ("Tell me about the weather on a windy day.", 64),
    ],
)
def test_a_unary_answer_is_the_text_a_stream_of_the_same_request_shows(
    channel: grpc.Channel, text: str, max_tokens: int
) -> None:
    """A unary answer is decoded once when it is complete; a stream's text is decoded as it goes. The same
    seeded request gets the same text either way, in any script, cut by max_tokens or not."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    sampling = common_pb2.SamplingParams(temperature=1.0, seed=3, max_tokens=max_tokens)
    chunks = list(stub.GenerateStream(chat_request(text, sampling=sampling), timeout=60))
    streamed = "".join(chunk.text_delta for chunk in chunks)
    unary = stub.Generate(chat_request(text, sampling=sampling), timeout=60).candidates[0]
    assert unary.completion_tokens == chunks[-1].final.completion_tokens > 0
    assert unary.text == streamed == chunks[-1].final.text


def test_a_stop_string_ends_a_unary_answer_before_it(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    whole = stub.Generate(chat_request("Tell me about the weather on a windy day.", sampling=greedy(48)), timeout=60)
    words = whole.candidates[0].text.split()
    assert len(words) > 4, whole.candidates[0].text
    stop = " " + words[len(words) // 2]
    sampling = common_pb2.SamplingParams(temperature=0.0, max_tokens=48, stop=[stop])
    cut = stub.Generate(chat_request("Tell me about the weather on a windy day.", sampling=sampling), timeout=60)
    assert cut.candidates[0].text == whole.candidates[0].text[: whole.candidates[0].text.index(stop)]
    assert cut.candidates[0].finish_reason == inference_pb2.FINISH_REASON_STOP
    assert cut.candidates[0].completion_tokens < whole.candidates[0].completion_tokens


def test_each_response_is_recorded_in_redis_and_on_the_responses_topic(
    channel: grpc.Channel, serving: ServingProcess
) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    user = f"user-{uuid.uuid4().hex[:6]}"
    reply = stub.Generate(chat_request("Hello!", user_id=user, tenant="acme", sampling=greedy()), timeout=60)
    response_id = reply.candidates[0].response_id

    async def fetch() -> events_pb2.ResponseLogged | None:
        client = redis_client(serving.config.redis)
        store = ResponseStore(client, serving.config.redis.key_prefix)
        for _ in range(50):  # written off the reply path: give the recorder a moment
            record = await store.get(response_id)
            if record is not None:
                break
            await asyncio.sleep(0.1)
        await client.aclose()
        return record

    record = asyncio.run(fetch())
    assert record is not None and record.request_id == reply.request_id
    assert (record.user_id, record.tenant, record.prompt.chat.messages[0].content) == (user, "acme", "Hello!")
    logged = record.candidates[0]
    assert logged.reply == reply.candidates[0]
    assert len(logged.token_ids) == len(logged.token_logprobs) == reply.candidates[0].completion_tokens
    assert all(lp <= 0.0 for lp in logged.token_logprobs)
    assert record.sampling.temperature == 0.0 and record.sampling.max_tokens == 24

    consumer = KafkaConsumer(bootstrap_servers=serving.config.kafka.bootstrap_servers, enable_auto_commit=False)
    topic = serving.config.kafka.topics.responses.name
    partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
    consumer.assign(partitions)
    for partition in partitions:
        consumer.seek(partition, 0)
    found = []
    for _ in range(20):
        for records in consumer.poll(timeout_ms=500).values():
            found += [e.event for e in map(receive, records) if e.event.request_id == reply.request_id]
        if found:
            break
    consumer.close()
    assert found == [record]


BAD_REQUESTS = {
    "missing user": (chat_request(user_id=""), "user_id: required"),
    "no prompt": (inference_pb2.GenerateRequest(user_id="u"), "prompt: required"),
    "empty text": (
        inference_pb2.GenerateRequest(user_id="u", prompt=common_pb2.Prompt(text="  ")),
        "prompt.text: empty",
    ),
    "oversize text": (
        inference_pb2.GenerateRequest(user_id="u", prompt=common_pb2.Prompt(text="a" * 9000)),
        "prompt.text: 9000 characters exceeds the limit of 8000",
    ),
    "too many tokens": (chat_request("9 " * 3000), "tokens exceeds the limit of 192"),
    "bad role": (
        inference_pb2.GenerateRequest(
            user_id="u",
            prompt=common_pb2.Prompt(
                chat=common_pb2.Chat(messages=[common_pb2.ChatMessage(role="robot", content="x")])
            ),
        ),
        "prompt.chat.messages[0].role",
    ),
    "temperature": (chat_request(sampling=common_pb2.SamplingParams(temperature=3.0)), "sampling.temperature: must be"),
    "top_p": (chat_request(sampling=common_pb2.SamplingParams(top_p=0.0)), "sampling.top_p"),
    "max_tokens": (chat_request(sampling=common_pb2.SamplingParams(max_tokens=100000)), "sampling.max_tokens"),
    "n": (chat_request(n=99), "n: 99 candidates exceeds the limit of 4"),
    "steer": (chat_request(steer_targets=common_pb2.SteerLMAttributes(helpfulness=9)), "steer_targets.helpfulness"),
}


@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_fields_are_invalid_argument_naming_the_field(channel: grpc.Channel, case: str) -> None:
    request, message = BAD_REQUESTS[case]
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    for call in (stub.Generate, lambda r, timeout: list(stub.GenerateStream(r, timeout=timeout))):
        with pytest.raises(grpc.RpcError) as raised:
            call(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in raised.value.details()


def test_a_client_deadline_aborts_and_the_service_keeps_serving(channel: grpc.Channel) -> None:
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
        stub.Generate(chat_request(sampling=common_pb2.SamplingParams(max_tokens=128, temperature=1.0)), timeout=0.01)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert stub.Generate(chat_request(sampling=greedy(8)), timeout=60).candidates[0].completion_tokens > 0


def test_many_concurrent_seeded_requests_with_long_prompts_are_all_answered(serving: ServingProcess) -> None:
    """More prompt tokens than one engine step takes, every request seeded: vLLM on CPU dies when it samples
    a seeded request whose prompt it prefilled in parts, so the engine runs without chunked prefill
    (engine.chunked_prefill). With it on, this load killed the engine (tests/serving/test_resilience.py)."""
    assert set(asyncio.run(seeded_load(serving.address))) == {"ok"}
    stub = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(serving.address))
    assert stub.Generate(chat_request(sampling=greedy()), timeout=60).candidates[0].text  # still serving


def test_the_engine_answers_a_request_of_its_own_before_the_replica_serves(serving: ServingProcess) -> None:
    """Torch compiles vLLM's sampler at an engine's first request with logprobs (seconds): the warm-up pays it
    before the health check says SERVING, so no user's request does."""
    log = serving.log.read_text()
    warmed = re.search(r"engine warmed up in (\d+\.\d) s", log)
    assert warmed is not None, log[-3000:]
    serving_line = re.search(r"serving ver_\w+ on ", log)
    assert serving_line is not None and warmed.start() < serving_line.start()


def test_the_engine_runs_the_model_in_its_engine_core_process(serving: ServingProcess) -> None:
    # engine.executor "uni": vLLM's CPU platform would swap in its multiprocess executor, whose model
    # worker (a second child) and the engine core busy-poll each other and burn a core between them.
    import psutil

    children = psutil.Process(serving.process.pid).children(recursive=True)
    titles = [" ".join(child.cmdline()) for child in children]
    assert any("EngineCore" in title for title in titles), titles
    assert not any("Worker" in title for title in titles), titles
