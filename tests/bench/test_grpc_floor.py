"""`bench.grpc_floor`: the feedback bench's do-nothing service accepts every submission of both methods,
so its rows measure the transport under the real service's load."""

from __future__ import annotations

import asyncio

import grpc

from bench.feedback import _drive, _floor
from bench.simulation import simulation_config
from trimtab.v1 import feedback_pb2, feedback_pb2_grpc


def _requests(count: int) -> list[feedback_pb2.SubmitRequest]:
    thumb = feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP)
    return [
        feedback_pb2.SubmitRequest(feedback_id=f"f{index}", user_id="u", response_id="r", label=thumb)
        for index in range(count)
    ]


def test_the_floor_accepts_every_submission_of_both_methods() -> None:
    with _floor(simulation_config()) as (address, _):
        with grpc.insecure_channel(address) as channel:
            stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
            assert stub.Submit(_requests(1)[0], timeout=10).feedback_id == "f0"
            batch = stub.SubmitBatch(feedback_pb2.SubmitBatchRequest(items=_requests(3)), timeout=10)
        assert [result.accepted.feedback_id for result in batch.results] == ["f0", "f1", "f2"]
        rate, latencies = asyncio.run(_drive(address, _requests(40), concurrency=2, batch_items=8))
    assert len(latencies) == 5 and rate > 0  # the bench's own driver: 40 items, 8 a call
