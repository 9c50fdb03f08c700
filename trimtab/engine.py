"""Starting vLLM on a model directory with the configured engine settings (one place for all callers)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimtab.config import EngineConfig

if TYPE_CHECKING:
    from vllm import LLM


def engine_kwargs(model_path: Path, config: EngineConfig) -> dict[str, Any]:
    """Keyword arguments for vLLM's LLM / AsyncEngineArgs."""
    # The class, not the name "uni": vLLM's CPU platform rewrites the name to "mp" (see EngineConfig.executor).
    from vllm.v1.executor.uniproc_executor import UniProcExecutor

    return {
        "distributed_executor_backend": UniProcExecutor if config.executor == "uni" else "mp",
        "model": str(model_path),
        "dtype": config.dtype,
        "max_model_len": config.max_model_len,
        "seed": config.seed,
        "enforce_eager": config.enforce_eager,
        "enable_chunked_prefill": config.chunked_prefill,
        "logprobs_mode": config.logprobs_mode,
        "enable_lora": config.lora,
        "gpu_memory_utilization": config.gpu_memory_utilization,
        **({"max_lora_rank": config.max_lora_rank, "max_loras": config.max_loras} if config.lora else {}),
    }


def offline_llm(model_path: Path, config: EngineConfig) -> LLM:
    """vLLM's offline engine (batch generation). Call under `if __name__ == "__main__":` in scripts:
    vLLM starts its engine core in a child process."""
    from vllm import LLM

    return LLM(**engine_kwargs(model_path, config))
