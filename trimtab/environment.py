"""The runtime environment every trimtab process starts with: one place, applied by each entry point
(`trimtab ...`, `python -m bench`, the test suite) before anything imports transformers or vLLM.

Defaults only (a variable already set wins): offline by design (no hub downloads at run time); the
offline vLLM engine may use every core (serving leaves one to itself: serving.cpu_cores_for_server);
a 1 GiB KV cache suits our 2-core machines and the tiny default model: raise it for real models.
No OpenMP thread binding: vLLM's automatic binding pins every engine's threads starting from core 0,
and a pinned, spinning OpenMP thread starves whatever else is pinned to its core: a second engine
(the learner's gates and evaluation beside serving) sat at 0 CPU seconds for minutes.
"""

from __future__ import annotations

import os

RUNTIME_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
    "VLLM_CPU_OMP_THREADS_BIND": "nobind",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "VLLM_LOGGING_LEVEL": "WARNING",
    # torch's inductor compiles a kernel of vLLM's sampler (the sampled tokens' logprob ranks) at an engine's
    # first request (serving/warmup.py), reusing a precompiled header from its cache when one matches. An
    # engine started by serving's VllmEngine.start on the default config died at its first request (a g++
    # error: `at::vec` undeclared) with a header an earlier process had left in the machine's cache (how it
    # was written is not known), and answered on the same cache with precompiled headers off. Off, a cold
    # cache's first compile took ~1 s longer (8.8 vs 7.6 s); it is then cached.
    "TORCHINDUCTOR_CPP_CACHE_PRECOMPILE_HEADERS": "0",
}


def apply_runtime_env() -> None:
    """RUNTIME_ENV as defaults of this process (and so of its children)."""
    for key, value in RUNTIME_ENV.items():
        os.environ.setdefault(key, value)
