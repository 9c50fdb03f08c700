"""Checks a version's weights against the running model before a swap, and the all-zero "base" adapter.

A swap that cannot apply must leave the old version serving: every check here runs before the
engine is paused, reading only safetensors headers (names, shapes, dtypes), never the tensors.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from trimtab.errors import TrimtabError

TensorSpec = tuple[tuple[int, ...], str]  # shape, dtype
ZERO_ADAPTER_RANK = 8
ZERO_ADAPTER_TARGETS = ("q_proj", "v_proj")


class SwapRefused(TrimtabError):
    """A version cannot be applied to this engine; the old version keeps serving."""


def tensor_specs(model_dir: Path) -> dict[str, TensorSpec]:
    """Name -> (shape, dtype) of every tensor in the directory's safetensors files (headers only)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise SwapRefused(f"{model_dir}: no *.safetensors files")
    specs: dict[str, TensorSpec] = {}
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = handle.get_slice(name)
                specs[name] = (tuple(tensor.get_shape()), tensor.get_dtype())
    return specs


def check_compatible(candidate: dict[str, TensorSpec], running: dict[str, TensorSpec]) -> None:
    """Same tensor names and shapes as the running model (dtype may differ: the engine casts)."""
    missing = sorted(set(running) - set(candidate))
    extra = sorted(set(candidate) - set(running))
    reshaped = sorted(n for n in set(running) & set(candidate) if running[n][0] != candidate[n][0])
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:3]}{'...' if len(missing) > 3 else ''}")
    if extra:
        problems.append(f"unexpected tensors {extra[:3]}{'...' if len(extra) > 3 else ''}")
    problems += [f"{n}: shape {candidate[n][0]} != running {running[n][0]}" for n in reshaped[:3]]
    if problems:
        raise SwapRefused("weights do not fit the running model: " + "; ".join(problems))


def write_zero_adapter(model_dir: Path, out: Path) -> Path:
    """A PEFT LoRA adapter whose update is exactly zero (lora_B = 0), for the model at `model_dir`.

    vLLM 0.32's CPU LoRA kernels give a request without an adapter the adapter of the last slot when
    it is batched with LoRA requests (design.md; upstream PR vllm#48421). Routing "base" requests
    through this adapter keeps them on the base weights.
    """
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, (shape, _) in tensor_specs(model_dir).items():
        module = name.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in ZERO_ADAPTER_TARGETS and len(shape) == 2:
            rows, cols = shape
            tensors[f"base_model.model.{module}.lora_A.weight"] = torch.zeros(ZERO_ADAPTER_RANK, cols)
            tensors[f"base_model.model.{module}.lora_B.weight"] = torch.zeros(rows, ZERO_ADAPTER_RANK)
    save_file(tensors, out / "adapter_model.safetensors")
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": ZERO_ADAPTER_RANK,
        "lora_alpha": ZERO_ADAPTER_RANK,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(ZERO_ADAPTER_TARGETS),
        "base_model_name_or_path": str(model_dir),
    }
    (out / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2))
    return out
