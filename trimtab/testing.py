"""Synthetic model versions for tests and benchmarks: deterministic variants of a model directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

NOT_COPIED = ("*.safetensors", "*.jsonl", "trimtab_build.json", "manifest.json")


def perturbed_copy(source: Path, out: Path, seed: int, scale: float = 0.3) -> Path:
    """The same model with seeded noise (scale x each tensor's std) on every weight: a different,
    deterministic full-weight version with identical tensor names and shapes."""
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(*NOT_COPIED))
    generator = torch.Generator().manual_seed(seed)
    for weights_file in sorted(source.glob("*.safetensors")):
        weights = load_file(weights_file)
        noisy = {n: w + scale * w.std() * torch.randn(w.shape, generator=generator) for n, w in weights.items()}
        save_file(noisy, out / weights_file.name)
    return out


def random_lora(base: Path, out: Path, seed: int, rank: int = 8) -> Path:
    """A PEFT LoRA adapter on q/v projections with random (non-zero) A and B: it visibly changes outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(str(out))
    return out
