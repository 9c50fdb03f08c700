"""Every engine trimtab starts takes its settings from `engine`: the keyword arguments vLLM gets."""

from __future__ import annotations

from pathlib import Path

from trimtab.config import load_config
from trimtab.engine import engine_kwargs


def test_the_engine_settings_reach_vllm_as_they_are_configured() -> None:
    config = load_config(
        path=None,
        environ={"TRIMTAB_ENGINE__GPU_MEMORY_UTILIZATION": "0.2", "TRIMTAB_ENGINE__MAX_MODEL_LEN": "512"},
    )
    kwargs = engine_kwargs(Path("/models/m"), config.engine)
    assert kwargs["gpu_memory_utilization"] == 0.2  # a learner's two engines share rank 0's GPU with training
    assert (kwargs["model"], kwargs["max_model_len"], kwargs["enable_lora"]) == ("/models/m", 512, True)
    assert "max_lora_rank" in kwargs
    assert "max_lora_rank" not in engine_kwargs(Path("/m"), config.engine.model_copy(update={"lora": False}))
