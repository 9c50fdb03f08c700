"""The model a run trains and the Hugging Face directory it publishes.

Two heads on any HF causal-LM backbone: the causal LM itself, or a reward model (the same backbone with
a scalar head, loaded and saved as `AutoModelForSequenceClassification` with one label, so transformers
loads the result as a reward model). Either can train as a LoRA adapter (peft): the policy is then
published as an adapter that serving loads beside its base weights; a reward model is merged and
published whole, since nothing serves it as an adapter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from learner.activation_checkpointing import checkpoint_blocks
from learner.distributed import DistContext, shard_model
from trimtab.config.learner import LoraSettings


def load_trainable(
    model_dir: Path,
    *,
    reward_model: bool,
    lora: LoraSettings,
    context: DistContext,
    dtype: torch.dtype,
    pad_token_id: int,
    activation_checkpointing: bool = False,
) -> nn.Module:
    """float32 master weights on this rank's device, LoRA-wrapped when configured, sharded with FSDP2
    (each transformer block checkpointed first when `activation_checkpointing`)."""
    model: nn.Module
    if reward_model:
        # The score head is new (initialised from the seeded RNG); the LM head is dropped.
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, dtype=torch.float32, num_labels=1)
        # The head reads the last non-pad token of each right-padded sequence.
        model.config.pad_token_id = pad_token_id  # type: ignore[union-attr]
    else:
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if lora.enabled:
        model = get_peft_model(model, peft_config(lora, reward_model))
    model.to(device=context.device)
    if activation_checkpointing:
        checkpoint_blocks(model)
    shard_model(model, dtype)
    return model


def peft_config(lora: LoraSettings, reward_model: bool) -> LoraConfig:
    # SEQ_CLS makes peft train the (new) score head in full beside the adapters.
    return LoraConfig(
        task_type="SEQ_CLS" if reward_model else "CAUSAL_LM",
        r=lora.rank,
        lora_alpha=lora.alpha,  # type: ignore[arg-type]  # peft annotates int; scaling alpha / r is a float
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
    )


def export(state: dict[str, torch.Tensor], config: Any, out: Path, *, reward_model: bool, lora: LoraSettings) -> None:
    """Write the gathered full state dict (`learner.distributed.full_state_dict`) as an HF directory:
    full weights, a reward model, or a peft adapter (adapter_config.json + adapter_model.safetensors)."""
    model_class = AutoModelForSequenceClassification if reward_model else AutoModelForCausalLM
    # A plain (unsharded) twin built on the meta device takes the gathered weights without a copy.
    with torch.device("meta"):
        plain: Any = model_class.from_config(config)
        if lora.enabled:
            plain = get_peft_model(plain, peft_config(lora, reward_model))
    plain.load_state_dict(state, assign=True)
    if isinstance(plain, PeftModel) and reward_model:
        plain = plain.merge_and_unload()
    plain.save_pretrained(out)
