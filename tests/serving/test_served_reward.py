"""The reward of served answers: a share of serving's answers (a stable hash of the response id) scored
by a real RewardService off the reply path, recorded per version; a service that is down costs nothing
but a counted failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from learner.rewards import RewardModel
from serving.metrics import ServingMetrics
from serving.served_reward import ServedReward, sampled
from tests.learner.tiny import make_tiny_model, make_tiny_reward_model
from tests.metrics import metric_points, series
from tests.reward_service import Served
from trimtab.config import load_config
from trimtab.config.reward_service import RewardServiceConfig, ServedRewardConfig
from trimtab.config.tls import TlsConfig
from trimtab.registry import Registry
from trimtab.v1 import common_pb2, events_pb2, inference_pb2

QUESTION = [{"role": "user", "content": "What is 2 plus 3?"}]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, Path]]:
    work = tmp_path_factory.mktemp("served-reward")
    registry = Registry(work / "registry")
    reward = registry.publish(
        make_tiny_reward_model(work / "rm", make_tiny_model(work / "policy")), parent=None, algorithm="rm"
    )
    config = load_config(environ={"TRIMTAB_REGISTRY__ROOT": str(registry.root), "TRIMTAB_REWARD_SERVICE__PORT": "0"})
    served = Served(config, reward.id)
    yield served, registry.path(reward.id)
    served.close()


def record(request: int, answers: list[tuple[str, str]]) -> events_pb2.ResponseLogged:
    logged = events_pb2.ResponseLogged(request_id=f"req_{request}", user_id="u")
    logged.prompt.chat.messages.extend([common_pb2.ChatMessage(**m) for m in QUESTION])
    for i, (version, text) in enumerate(answers):
        reply = inference_pb2.Candidate(index=i, response_id=f"res_{request}_{i}", text=text, model_version=version)
        logged.candidates.append(events_pb2.CandidateRecord(reply=reply))
    return logged


def scored(
    address: str,
    records: list[events_pb2.ResponseLogged],
    share: float,
    service: RewardServiceConfig | None = None,
) -> InMemoryMetricReader:
    reader = InMemoryMetricReader()
    meters = ServingMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))

    service = service or RewardServiceConfig()

    async def run() -> None:
        scorer = ServedReward(
            ServedRewardConfig(address=address, share=share, timeout_s=5), service, meters, TlsConfig()
        )
        scorer.start()
        for logged in records:
            scorer.offer(logged)
        await scorer.close(timeout_s=30)

    asyncio.run(run())
    return reader


def test_sampled_answers_are_scored_by_the_service_and_recorded_by_version(service: tuple[Served, Path]) -> None:
    served, model_dir = service
    records = [record(0, [("ver_a", "5"), ("ver_a", "It is five.")]), record(1, [("ver_b", "Hello")])]
    reader = scored(served.address, records, share=1.0)
    counts = metric_points(reader, "trimtab.serving.served_reward_scored")
    sums = metric_points(reader, "trimtab.serving.served_reward_sum")
    expected = RewardModel(model_dir)([QUESTION] * 3, ["5", "It is five.", "Hello"])
    assert counts == {series(version="ver_a"): 2, series(version="ver_b"): 1}
    assert sums[series(version="ver_a")] == pytest.approx(expected[0] + expected[1], abs=1e-4)
    assert sums[series(version="ver_b")] == pytest.approx(expected[2], abs=1e-4)


def test_the_share_is_a_stable_hash_of_the_response_id() -> None:
    ids = [f"res_{i}" for i in range(2000)]
    picked = [i for i in ids if sampled(i, 0.1)]
    assert 150 < len(picked) < 250 and picked == [i for i in ids if sampled(i, 0.1)]
    assert all(sampled(i, 1.0) for i in ids)


def test_a_service_that_is_down_is_counted_not_raised() -> None:
    reader = scored("127.0.0.1:1", [record(0, [("ver_a", "5")])], share=1.0)
    assert metric_points(reader, "trimtab.serving.served_reward_failures") == {series(code="UNAVAILABLE"): 1}
    assert metric_points(reader, "trimtab.serving.served_reward_scored") == {}
