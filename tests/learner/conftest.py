"""The default model and one offline vLLM engine on it, each made once per test run and shared by the
learner tests that need them (vLLM takes 20-40 s to start on our 2-core machines)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from learner.default_model import build_default_model
from tests.conftest import REPO
from trimtab.config import TrimtabConfig, load_config


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
