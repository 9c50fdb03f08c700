"""One real serving process per test run (`trimtab serve` with the real vLLM engine, broker and Redis),
shared by tests/serving and tests/loop; registered as a plugin by tests/conftest.py. Also the helpers
that start a `trimtab feedback` beside a serving process and submit to it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from guardrails.runtime import BUNDLED_CONFIG
from tests.conftest import REPO, free_port
from trimtab.config import TrimtabConfig, load_config
from trimtab.health import wait_serving
from trimtab.registry import Registry
from trimtab.tls import scheme
from trimtab.v1 import common_pb2, feedback_pb2, feedback_pb2_grpc, inference_pb2, inference_pb2_grpc

START_TIMEOUT_S = 180
GUARDED_TENANT = "guarded"


@dataclass(frozen=True)
class ServingProcess:
    address: str
    config: TrimtabConfig
    process: subprocess.Popen[str]
    log: Path

    @property
    def openai_url(self) -> str:
        """The OpenAI API's base URL (what `OpenAI(base_url=...)` takes)."""
        return f"{scheme(self.config.tls)}://127.0.0.1:{self.config.serving.openai.port}/v1"


def serving_env(stack: TrimtabConfig, port: int, registry_root: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    env |= {
        "TRIMTAB_SUITE__KIND": "world",  # the tests run in the simulation (its secret and insults)
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "TRIMTAB_REDIS__URL": stack.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": stack.redis.key_prefix,
        "TRIMTAB_MODEL__PATH": str(REPO / ".trimtab/models/default"),
        "TRIMTAB_SERVING__PORT": str(port),
        "TRIMTAB_SERVING__OPENAI__PORT": str(free_port()),
        # Where POST /v1/feedback goes: the session's `feedback` fixture starts a FeedbackService there.
        "TRIMTAB_SERVING__OPENAI__FEEDBACK_ADDRESS": f"127.0.0.1:{free_port()}",
        "TRIMTAB_SERVING__DRAIN_GRACE_S": "20",
        "TRIMTAB_SERVING__VERSION_POLL_S": "1",
        "TRIMTAB_REGISTRY__ROOT": str(registry_root),
        # /metrics on a port of its own (a real Prometheus scrapes the session's in tests/loop/test_demo_learner.py)
        "TRIMTAB_TELEMETRY__METRICS": "prometheus",
        "TRIMTAB_TELEMETRY__PROMETHEUS_PORT": str(free_port()),
    }
    return env | {f"TRIMTAB_{key.upper()}": value for key, value in extra.items()}


# The ports a serving process binds, picked free by the caller but bound only after the engine starts
# (10-30 s later): another process may take one meanwhile. Then the start is tried again on new ones.
LATE_BOUND_PORTS = ("TRIMTAB_SERVING__PORT", "TRIMTAB_SERVING__OPENAI__PORT")


def start_serving(env: dict[str, str], log: Path, metadata: tuple[tuple[str, str], ...] = ()) -> ServingProcess:
    """Start `trimtab serve` and wait until its health service says SERVING (or fail with its log)."""
    for attempt in range(3):
        address = f"127.0.0.1:{env['TRIMTAB_SERVING__PORT']}"
        process = subprocess.Popen(
            [sys.executable, "-m", "trimtab.app.cli", "serve"],
            cwd=REPO,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            text=True,
        )
        config = load_config(environ=env)
        if wait_serving(address, process, START_TIMEOUT_S, metadata, config.tls):
            return ServingProcess(address, config, process, log)
        process.kill()
        process.wait()
        # aiohttp says "address already in use", gRPC's core "Address already in use"
        if "address already in use" not in log.read_text().lower() or attempt == 2:
            break
        env = env | {name: str(free_port()) for name in LATE_BOUND_PORTS}
    pytest.fail(f"trimtab serve not SERVING (exit code {process.poll()}):\n{log.read_text()[-3000:]}")


async def seeded_load(address: str, requests: int = 256) -> list[str]:
    """`requests` concurrent seeded Generate calls with ~150-token prompts (together more prompt tokens
    than an engine step takes); each one's outcome: "ok" or its status code's name."""
    prompt = " ".join(f"word{j % 50}" for j in range(36))
    async with grpc.aio.insecure_channel(address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)

        async def one(seed: int) -> str:
            request = inference_pb2.GenerateRequest(
                user_id=f"seeded-{seed}", sampling=common_pb2.SamplingParams(temperature=1.0, max_tokens=8, seed=seed)
            )
            request.prompt.chat.messages.add(role="user", content=prompt)
            try:
                await stub.Generate(request, timeout=300)
            except grpc.aio.AioRpcError as error:
                return str(error.code().name)
            return "ok"

        return list(await asyncio.gather(*(one(seed) for seed in range(requests))))


@dataclass(frozen=True)
class FeedbackProcess:
    address: str  # the gRPC FeedbackService
    process: subprocess.Popen[bytes]
    log: Path


def start_feedback(serving: TrimtabConfig, log: Path, port: int | None = None) -> FeedbackProcess:
    """`trimtab feedback` against the same broker and Redis (and key prefix) as a serving process."""
    port = port or free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")} | {
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": serving.kafka.bootstrap_servers,
        "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": serving.kafka.topics.feedback.name,
        "TRIMTAB_REDIS__URL": serving.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": serving.redis.key_prefix,
        "TRIMTAB_FEEDBACK__GRPC_PORT": str(port),
        "TRIMTAB_FEEDBACK__HTTP_PORT": str(free_port()),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "trimtab.app.cli", "feedback"],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    address = f"127.0.0.1:{port}"
    if not wait_serving(address, process, timeout_s=60):
        process.kill()
        pytest.fail(f"trimtab feedback not SERVING:\n{log.read_text()[-2000:]}")
    return FeedbackProcess(address, process, log)


def stop_feedback(feedback: FeedbackProcess) -> None:
    feedback.process.terminate()
    assert feedback.process.wait(timeout=30) == 0, feedback.log.read_text()[-2000:]


def submit(address: str, message: feedback_pb2.SubmitRequest) -> feedback_pb2.SubmitResponse:
    """Submit at once, as a client would the moment the answer arrives: the feedback service waits for a
    fresh response's record itself. Only UNAVAILABLE (the record still not written) is retried, never
    NOT_FOUND."""
    with grpc.insecure_channel(address) as channel:
        stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
        for _ in range(5):
            try:
                return stub.Submit(message, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                time.sleep(1.0)
        return stub.Submit(message, timeout=30)


def stop_serving(serving: ServingProcess) -> int:
    """SIGTERM, and the exit code (in time: the stop's deadline, drain grace + shutdown timeout, is under 60 s)."""
    serving.process.send_signal(signal.SIGTERM)
    try:
        return serving.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        serving.process.kill()
        raise
    finally:
        warn_if_stuck(serving)


def warn_if_stuck(serving: ServingProcess) -> None:
    """A stop that ran into its deadline still ends the process (exit 1, which tests that stop a replica
    only to clean up do not check); its stuck step and every thread's stack become a warning in the test
    report, for whoever finds out why."""
    log = serving.log.read_text(errors="replace")
    if (at := log.find("stuck at:")) >= 0:
        warnings.warn(f"trimtab serve's stop hit its deadline, {log[at : at + 8000]}", stacklevel=2)


@pytest.fixture(scope="session")
def served_reward(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A RewardService for the session's serving process to score a share of its answers with (the reward
    of served answers, on its /metrics): a tiny untrained reward model, as real a service as any."""
    from tests.learner.tiny import make_tiny_model, make_tiny_reward_model
    from tests.reward_service import Served

    work = tmp_path_factory.mktemp("served-reward")
    registry = Registry(work / "registry")
    model = make_tiny_reward_model(work / "rm", make_tiny_model(work / "policy"))
    reward = registry.publish(model, parent=None, algorithm="rm")
    config = load_config(environ={"TRIMTAB_REGISTRY__ROOT": str(registry.root), "TRIMTAB_REWARD_SERVICE__PORT": "0"})
    service = Served(config, reward.id)
    yield service.address
    service.close()


@pytest.fixture(scope="session")
def serving(
    stack: TrimtabConfig, served_reward: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServingProcess]:
    workdir = tmp_path_factory.mktemp("serving")
    # Guardrails check only the GUARDED_TENANT's requests (tests/guardrails), on a copy of their config
    # that those tests edit to see it reload; every other tenant is served as if they were off.
    rails_dir = shutil.copytree(BUNDLED_CONFIG, workdir / "guardrails")
    env = serving_env(
        stack,
        free_port(),
        workdir / "registry",
        guardrails__enabled="true",
        guardrails__tenants=f"[{GUARDED_TENANT}]",
        guardrails__config_dir=str(rails_dir),
        guardrails__reload_poll_s="0.5",
        serving__served_reward__address=served_reward,
        serving__served_reward__share="0.25",
    )
    running = start_serving(env, workdir / "serve.log")
    yield running
    stop_serving(running)


@pytest.fixture(scope="session")
def feedback(serving: ServingProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FeedbackProcess]:
    """`trimtab feedback` where the session's serving process forwards the OpenAI API's feedback."""
    port = int(serving.config.serving.openai.feedback_address.rsplit(":", 1)[1])
    running = start_feedback(serving.config, tmp_path_factory.mktemp("feedback") / "feedback.log", port)
    yield running
    stop_feedback(running)


@pytest.fixture(scope="session")
def channel(serving: ServingProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(serving.address) as channel:
        yield channel
