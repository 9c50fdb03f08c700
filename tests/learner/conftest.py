"""One offline vLLM engine on the default model, made once per test run and shared by the learner tests
that need it (vLLM takes 20-40 s to start on our 2-core machines)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from trimtab.config import TrimtabConfig


@pytest.fixture(scope="session")
def vllm_engine(default_model_config: TrimtabConfig) -> Iterator[Any]:
    """vLLM's offline engine on the default model. A test that swaps its weights puts them back."""
    from learner.evaluate import vllm_engine as start_engine

    with start_engine(default_model_config.model.path, default_model_config.engine) as llm:
        yield llm
