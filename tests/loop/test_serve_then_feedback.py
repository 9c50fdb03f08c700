"""End to end through the real processes: `trimtab serve` answers, a user judges the answers through
`trimtab feedback`, and the feedback topic carries self-contained training examples that point back
at the versions, tokens and logprobs that produced them, in the order the user gave them."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.serving_process import FeedbackProcess, ServingProcess, submit
from trimtab.events import receive
from trimtab.v1 import common_pb2, events_pb2, feedback_pb2, inference_pb2, inference_pb2_grpc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def feedback_address(feedback: FeedbackProcess) -> str:
    return feedback.address


def test_feedback_on_served_answers_becomes_self_contained_training_events(
    serving: ServingProcess, feedback_address: str
) -> None:
    user = f"loop-{uuid.uuid4().hex[:8]}"
    request = inference_pb2.GenerateRequest(
        user_id=user, n=2, sampling=common_pb2.SamplingParams(seed=3, max_tokens=32)
    )
    request.prompt.chat.messages.add(role="user", content="What colour is a blorb?")
    served = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(serving.address)).Generate(
        request, timeout=60
    )
    first, second = served.candidates

    labels = [
        feedback_pb2.FeedbackLabel(
            pairwise=feedback_pb2.Pairwise(
                chosen_response_id=second.response_id, rejected_response_id=first.response_id
            )
        ),
        feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_DOWN),
        feedback_pb2.FeedbackLabel(correction="Thanks for asking! A blorb is red."),
    ]
    acks = []
    for i, label in enumerate(labels):
        response_id = "" if label.HasField("pairwise") else first.response_id
        message = feedback_pb2.SubmitRequest(
            feedback_id=f"{user}-{i}", user_id=user, response_id=response_id, label=label
        )
        acks.append(submit(feedback_address, message))
    assert len(acks) == 3 and not any(ack.replayed for ack in acks)
    assert len({(ack.partition) for ack in acks}) == 1  # keyed by request: one partition, in order
    assert [a.offset for a in acks] == sorted(a.offset for a in acks)

    events = _read(serving, acks)
    assert [e.feedback_id for e in events] == [f"{user}-{i}" for i in range(3)]
    for event in events:
        record = event.served
        assert record.request_id == served.request_id and record.user_id == user
        assert [c.reply for c in record.candidates] == list(served.candidates)
        assert all(len(c.token_ids) == len(c.token_logprobs) == c.reply.completion_tokens for c in record.candidates)
        assert record.candidates[0].reply.model_version.startswith("ver_")
        assert record.prompt.chat.messages[-1].content == "What colour is a blorb?"
    assert events[0].label.pairwise.chosen_response_id == second.response_id
    assert events[1].label.thumb == feedback_pb2.THUMB_DOWN
    assert events[2].label.correction.startswith("Thanks for asking")


def _read(serving: ServingProcess, acks: list[feedback_pb2.SubmitResponse]) -> list[events_pb2.FeedbackEvent]:
    consumer = KafkaConsumer(bootstrap_servers=serving.config.kafka.bootstrap_servers, enable_auto_commit=False)
    partition = TopicPartition(acks[0].topic, acks[0].partition)
    consumer.assign([partition])
    consumer.seek(partition, acks[0].offset)
    events: list[events_pb2.FeedbackEvent] = []
    deadline = time.monotonic() + 20
    while len(events) < len(acks) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            events += [e for e in (receive(r).event for r in records) if isinstance(e, events_pb2.FeedbackEvent)]
    consumer.close()
    wanted = {ack.feedback_id for ack in acks}
    return [e for e in events if e.feedback_id in wanted]
