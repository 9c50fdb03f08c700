"""One real serving process per test run: `trimtab serve` with the real vLLM engine, broker and Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO, free_port
from trimtab.config import TrimtabConfig, load_config
from trimtab.registry import Registry
from trimtab.testing import perturbed_copy, random_lora

START_TIMEOUT_S = 180


@dataclass(frozen=True)
class ServingProcess:
    address: str
    config: TrimtabConfig
    process: subprocess.Popen[str]
    log: Path


def serving_env(stack: TrimtabConfig, port: int, registry_root: Path, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    env |= {
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": stack.kafka.bootstrap_servers,
        "TRIMTAB_REDIS__URL": stack.redis.url,
        "TRIMTAB_REDIS__KEY_PREFIX": stack.redis.key_prefix,
        "TRIMTAB_MODEL__PATH": str(REPO / ".trimtab/models/default"),
        "TRIMTAB_SERVING__PORT": str(port),
        "TRIMTAB_SERVING__DRAIN_GRACE_S": "20",
        "TRIMTAB_SERVING__VERSION_POLL_S": "1",
        "TRIMTAB_REGISTRY__ROOT": str(registry_root),
    }
    return env | {f"TRIMTAB_{key.upper()}": value for key, value in extra.items()}


def start_serving(env: dict[str, str], log: Path, metadata: tuple[tuple[str, str], ...] = ()) -> ServingProcess:
    """Start `trimtab serve` and wait until its health service says SERVING (or fail with its log)."""
    address = f"127.0.0.1:{env['TRIMTAB_SERVING__PORT']}"
    process = subprocess.Popen(
        [sys.executable, "-m", "trimtab.cli", "serve"],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    with grpc.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"trimtab serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    return ServingProcess(address, load_config(environ=env), process, log)
            except grpc.RpcError:
                time.sleep(0.5)
    process.kill()
    pytest.fail(f"trimtab serve not SERVING after {START_TIMEOUT_S}s:\n{log.read_text()[-3000:]}")


def stop_serving(serving: ServingProcess) -> int:
    serving.process.send_signal(signal.SIGTERM)
    try:
        return serving.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        serving.process.kill()
        raise


@pytest.fixture(scope="session")
def serving(stack: TrimtabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingProcess]:
    workdir = tmp_path_factory.mktemp("serving")
    running = start_serving(serving_env(stack, free_port(), workdir / "registry"), workdir / "serve.log")
    yield running
    stop_serving(running)


@pytest.fixture(scope="session")
def channel(serving: ServingProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(serving.address) as channel:
        yield channel


@dataclass(frozen=True)
class SwapVersions:
    """Versions published for the swap tests: the initial one, a full-weight variant, a LoRA on the
    initial one, and a damaged copy."""

    initial: str
    full: str
    lora: str
    damaged: str
    registry: Registry


@pytest.fixture(scope="session")
def versions(serving: ServingProcess, tmp_path_factory: pytest.TempPathFactory) -> SwapVersions:
    registry = Registry(serving.config.registry.root)
    initial = registry.versions()[0]
    source = registry.path(initial.id)
    work = tmp_path_factory.mktemp("versions")
    full = registry.publish(perturbed_copy(source, work / "full", seed=1), parent=initial.id, algorithm="test-noise")
    lora = registry.publish(
        random_lora(source, work / "lora", seed=2), parent=initial.id, base=initial.id, algorithm="test-lora"
    )
    damaged = registry.publish(perturbed_copy(source, work / "damaged", seed=3), parent=initial.id, algorithm="test")
    weights = registry.path(damaged.id) / "model.safetensors"
    weights.chmod(0o644)
    with weights.open("r+b") as handle:  # flip bytes inside a tensor: the checksum no longer matches
        handle.seek(-64, 2)
        handle.write(b"\x7f" * 16)
    return SwapVersions(initial.id, full.id, lora.id, damaged.id, registry)
