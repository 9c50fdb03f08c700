"""Shared fixtures: each real service starts once per test run, on free ports, in its own namespace."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from trimtab.app.stack import down, up
from trimtab.app.stack.process import ServiceProcess
from trimtab.config import TrimtabConfig, load_config
from trimtab.environment import apply_runtime_env
from trimtab.ports import free_port
from trimtab.records import purge_prefix
from trimtab.simulation.default_model import build_default_model

# Offline, and vLLM sized for a 2-core CI machine, before any test module imports transformers or vLLM.
apply_runtime_env()

REPO = Path(__file__).resolve().parents[1]
# The real serving process (session-scoped), for tests/serving and tests/loop.
pytest_plugins = ["tests.serving_process"]


def config_with(run_dir: Path, **env: str) -> TrimtabConfig:
    """A config from defaults plus TRIMTAB_ overrides given as keyword arguments (no file, no os.environ)."""
    environ = {
        "TRIMTAB_SUITE__KIND": "world",  # the tests run in the simulation
        "TRIMTAB_STACK__RUN_DIR": str(run_dir),
        "TRIMTAB_STACK__SERVICES_FILE": str(REPO / "deploy/local/services.yaml"),
    }
    environ |= {f"TRIMTAB_{key.upper()}": value for key, value in env.items()}
    return load_config(path=None, environ=environ)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrimtabConfig]:
    """The local stack for the whole run: a broker of our own on a free port, and the machine's Redis
    (started by `up` if none answers) with a key prefix no other run uses."""
    config = config_with(
        tmp_path_factory.mktemp("stack"),
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis__key_prefix=f"trimtab-test-{uuid.uuid4().hex[:8]}:",
    )
    up(config)
    yield config
    purge_prefix(config.redis.url, config.redis.key_prefix)  # the machine's Redis outlives the run
    down(config)


def broker_of_its_own(stack: TrimtabConfig, run_dir: Path) -> TrimtabConfig:
    """A config whose broker (on a free port, started by `up`, stopped by `down`) only its caller uses and
    may restart; Redis is the session's, under a key prefix of its own."""
    return config_with(
        run_dir,
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis__url=stack.redis.url,
        redis__key_prefix=f"{stack.redis.key_prefix}{uuid.uuid4().hex[:6]}:",
    )


def stack_of_its_own(stack: TrimtabConfig, run_dir: Path) -> TrimtabConfig:
    """A config whose broker and Redis (both on free ports, started by `up`, stopped by `down`) only its
    caller uses and may kill or restart."""
    return config_with(
        run_dir,
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis__url=f"redis://127.0.0.1:{free_port()}/0",
        redis__key_prefix=stack.redis.key_prefix,
    )


def kill_local(config: TrimtabConfig, name: str) -> None:
    """SIGKILL a service `up` started for `config` ("broker" or "redis"), as a crash would; `up` starts it again."""
    record = ServiceProcess(name, config.stack.run_dir).record()
    assert record is not None, f"no {name} of this config's own is running"
    pid = int(str(record["pid"]))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # started by this process's `up`: reap it


@pytest.fixture(scope="session")
def default_model_config() -> TrimtabConfig:
    # The repo's default model, which `make test` builds before the suite runs; built here if not.
    config = load_config(path=None, environ={"TRIMTAB_MODEL__PATH": str(REPO / ".trimtab/models/default")})
    build_default_model(config, report=lambda _: None)
    return config


@pytest.fixture(scope="session")
def vllm_engine(default_model_config: TrimtabConfig) -> Iterator[Any]:
    """vLLM's offline engine on the default model. A test that swaps its weights puts them back."""
    from learner.evaluate import vllm_engine as start_engine

    with start_engine(default_model_config.model.path, default_model_config.engine) as llm:
        yield llm
