"""Starting vLLM on a model directory with the configured engine settings (one place for all callers)."""

from __future__ import annotations

import os
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


def offline_llm(model_path: Path, config: EngineConfig, *, in_process: bool = False) -> LLM:
    """vLLM's offline engine (batch generation).

    By default vLLM runs its engine core in a spawned child process (call under `if __name__ == "__main__":`
    in scripts), which imports vLLM a second time: 7 s of a 15 s start on our CPUs, 16 s on a slow one.
    `in_process=True` steps the engine core in this process instead, for a worker process that hosts the
    engine: vLLM then sets the process's global seed and its torch threads (one, unless OMP_NUM_THREADS is
    set), which the caller puts back if it also runs torch for itself (the gates' worker: its KL pass).
    Never in a trainer or a bench."""
    import torch
    from vllm import LLM

    if not in_process:
        return LLM(**engine_kwargs(model_path, config))
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # read when the engine is made
    set_threads = torch.set_num_threads
    llm = LLM(**engine_kwargs(model_path, config))
    # vLLM's CPU worker replaces torch.set_num_threads with a no-op in the process that hosts it (after setting
    # one thread, where OMP_NUM_THREADS is not set): give the host its setter back.
    torch.set_num_threads = set_threads
    return llm
