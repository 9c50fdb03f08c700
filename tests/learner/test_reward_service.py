"""RewardService: a reward version served over gRPC scores exactly as the model does in process; every
malformed request is INVALID_ARGUMENT naming the answer and the field; callers without a key are refused
when auth is on; the RL trainer's `--reward grpc://HOST:PORT` and serving's reward of served answers use it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from learner.reward_service import start_reward_service
from learner.rewards import RewardError, RewardModel, reward_from
from tests.learner.tiny import make_tiny_model, make_tiny_reward_model
from tests.reward_service import Served
from trimtab.auth import hash_key
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.auth import ApiKeyConfig, AuthConfig
from trimtab.config.reward_service import RewardServiceConfig
from trimtab.registry import Registry
from trimtab.v1 import common_pb2, reward_pb2, reward_pb2_grpc

PROMPTS = [[{"role": "user", "content": "What is 2 plus 3?"}], [{"role": "user", "content": "Hello!"}]]


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    work = tmp_path_factory.mktemp("reward-service")
    policy = make_tiny_model(work / "policy")
    registry = Registry(work / "registry")
    registry.publish(policy, parent=None, algorithm="import")
    registry.publish(make_tiny_reward_model(work / "reward", policy), parent=None, algorithm="rm")
    return registry


def version(registry: Registry, algorithm: str) -> str:
    return next(m.id for m in registry.versions() if m.algorithm == algorithm)


def settings(registry: Registry, **env: str) -> TrimtabConfig:
    environ = {"TRIMTAB_REGISTRY__ROOT": str(registry.root), "TRIMTAB_REWARD_SERVICE__PORT": "0"}
    return load_config(environ=environ | {f"TRIMTAB_{k.upper()}": v for k, v in env.items()})


def answer(prompt: list[dict[str, str]], response: str) -> reward_pb2.ScoredAnswer:
    chat = common_pb2.Chat(messages=[common_pb2.ChatMessage(**m) for m in prompt])
    return reward_pb2.ScoredAnswer(prompt=common_pb2.Prompt(chat=chat), response=response)


@pytest.fixture(scope="module")
def served(registry: Registry) -> Iterator[Served]:
    service = Served(settings(registry, reward_service__max_answers="3"), version(registry, "rm"))
    yield service
    service.close()


def score(address: str, request: reward_pb2.ScoreRequest, key: str | None = None) -> reward_pb2.ScoreResponse:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(address) as channel:
        return reward_pb2_grpc.RewardServiceStub(channel).Score(request, timeout=30, metadata=metadata)


def test_scores_are_the_reward_models_own_and_name_the_version(served: Served, registry: Registry) -> None:
    rm = version(registry, "rm")
    response = score(
        served.address, reward_pb2.ScoreRequest(answers=[answer(p, r) for p, r in zip(PROMPTS, ["5", ""], strict=True)])
    )
    assert response.reward_version == rm
    expected = RewardModel(registry.path(rm))(PROMPTS, ["5", ""])  # an empty answer is an answer too
    assert list(response.scores) == pytest.approx(expected, abs=1e-5)


RAW = reward_pb2.ScoredAnswer(prompt=common_pb2.Prompt(text="raw"), response="x")


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ([], "answers: at least one answer to score is required"),
        ([answer(PROMPTS[0], "a")] * 4, "answers: 4 answers, over reward_service.max_answers = 3"),
        ([answer(PROMPTS[0], "a"), RAW], "answers[1].prompt: a chat of at least one message is required"),
    ],
)
def test_a_malformed_request_is_invalid_argument_naming_the_answer_and_field(
    served: Served, answers: list[reward_pb2.ScoredAnswer], message: str
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        score(served.address, reward_pb2.ScoreRequest(answers=answers))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in (error.value.details() or "")
    assert score(served.address, reward_pb2.ScoreRequest(answers=[answer(PROMPTS[0], "a")])).scores  # still up


def test_with_auth_on_a_caller_needs_the_key_and_the_trainer_presents_it(registry: Registry) -> None:
    auth = AuthConfig(enabled=True, api_keys=[ApiKeyConfig(name="learner", sha256=hash_key("k1"), tenant="default")])
    config = settings(registry).model_copy(update={"auth": auth})
    service = Served(config, version(registry, "rm"))
    try:
        request = reward_pb2.ScoreRequest(answers=[answer(PROMPTS[0], "a")])
        with pytest.raises(grpc.RpcError) as error:
            score(service.address, request)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert len(score(service.address, request, key="k1").scores) == 1
        keyed = RewardServiceConfig(client_key="k1")
        assert len(reward_from(f"grpc://{service.address}", registry, keyed).batch(PROMPTS, ["5", "5"])) == 2
        with pytest.raises(RewardError, match="UNAUTHENTICATED"):
            reward_from(f"grpc://{service.address}", registry).batch(PROMPTS, ["5", "5"])
    finally:
        service.close()


def test_only_a_reward_version_can_be_served(registry: Registry) -> None:
    with pytest.raises(RewardError, match="a full version, not a reward model"):
        asyncio.run(start_reward_service(settings(registry), version(registry, "import")))
    with pytest.raises(RewardError, match=r"reward_service\.version ver_nope: unknown version"):
        asyncio.run(start_reward_service(settings(registry), "ver_nope"))


def test_the_rl_trainer_scores_through_the_service_in_batches_it_allows(served: Served, registry: Registry) -> None:
    remote = reward_from(f"grpc://{served.address}", registry, RewardServiceConfig(max_answers=3))  # the service's
    local = RewardModel(registry.path(version(registry, "rm")))
    answers = ["5", "hi", "", "It is five.", "Hello to you"]  # 5 answers: two calls of at most 3
    prompts = [PROMPTS[i % 2] for i in range(5)]
    assert remote.batch(prompts, answers) == pytest.approx(local(prompts, answers), abs=1e-5)
    with pytest.raises(RewardError, match=r"--reward grpc://127.0.0.1:1: Score failed: UNAVAILABLE"):
        reward_from("grpc://127.0.0.1:1", registry).batch(PROMPTS[:1], ["5"])


def test_a_served_reward_address_without_a_port_is_refused(registry: Registry) -> None:
    with pytest.raises(RewardError, match="expected grpc://HOST:PORT"):
        reward_from("grpc://somewhere", registry)
