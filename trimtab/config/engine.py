"""The vLLM engine settings shared by everything that generates (serving, the demo, the benchmarks)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trimtab.config.base import Section


class EngineConfig(Section):
    """How vLLM runs the model at `model.path`."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        # float32 on CPU: bf16 is about half as fast there (design.md); bfloat16 on GPUs.
        default="float32",
        description="Weights and activations dtype inside vLLM.",
    )
    max_model_len: int = Field(default=256, ge=16, description="Longest prompt + completion, in tokens.")
    seed: int = Field(default=0, description="Engine seed; per-request seeds make sampling reproducible.")
    # Off by default: vLLM 0.32 on CPU kills its engine when it samples a seeded request whose prompt it
    # prefilled in parts (it rewinds the request's torch generator with set_offset, which only CUDA
    # generators have: "CPU Generator does not use offset"). A prompt is split when a step's token budget
    # runs out, so 256 concurrent seeded requests of ~150 tokens took serving down (every request then
    # failed). Unsplit, a prompt that does not fit the step's budget waits for the next step.
    chunked_prefill: bool = Field(
        default=False,
        description="Let vLLM split a long prompt's prefill across steps (unsafe with seeded requests on CPU).",
    )
    # vLLM's CPU platform swaps its single-process executor for the multiprocess one, whose worker and
    # engine core busy-poll each other (sched_yield for a second after every message): on 2 cores that
    # spinning burnt most of a core, so the engine's own threads could not have it. "uni" runs the model
    # in the engine-core process (still a child of ours); it relies on our OpenMP settings from the
    # environment (trimtab/environment.py: no vLLM thread binding), which the worker would otherwise set.
    executor: Literal["uni", "mp"] = Field(
        default="uni",
        description="Single-process ('uni') or multiprocess ('mp') model executor inside vLLM's engine core.",
    )
    enforce_eager: bool = Field(
        default=True, description="Skip graph capture/compilation: faster start-up, which dominates on CPU."
    )
    logprobs_mode: Literal["raw_logprobs", "processed_logprobs"] = Field(
        # Behaviour-policy logprobs for importance weighting must be after temperature/top-k (design.md).
        default="processed_logprobs",
        description="What sampled-token logprobs mean: raw model logits or after temperature/top-k/top-p.",
    )
    lora: bool = Field(
        default=True, description="Serve LoRA adapter versions (side-by-side canaries) from the same engine."
    )
    max_lora_rank: int = Field(default=16, ge=1, description="Largest LoRA rank an adapter version may have.")
    max_loras: int = Field(default=4, ge=1, description="Adapters active in one batch (current, canary, base).")
    # On a GPU the learner's rank 0 holds its share of the training state beside two engines of its own (the
    # rollout engine with learner.online.rl, the gates' worker for the whole run), each of which would
    # otherwise reserve vLLM's default 90% of the device: give the learner's processes a smaller share.
    gpu_memory_utilization: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of a GPU's memory one engine may take (weights and KV cache). Not used on CPU, where"
        " the KV cache is VLLM_CPU_KVCACHE_SPACE GiB.",
    )
