"""The models of an RL run besides the rollout engine: the actor (the policy being trained), the critic (PPO:
per-token values), and the reference (the starting policy, frozen), each FSDP2-sharded like any trained model.

The critic is the reward model's backbone and head read at every token (`AutoModelForTokenClassification`
with one label, no bias: the reward model's own `score` weights load into it), as InstructGPT and
NeMo-Aligner initialise it; with a scorer for a reward there is no reward model, and it starts from the
policy's backbone with a fresh head. With LoRA the reference is the actor with its adapter switched off:
no second copy in memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForTokenClassification

from learner.checkpoint import TrainingState
from learner.distributed import DistContext, shard_model
from learner.models import load_trainable
from learner.optim import constant_rate
from trimtab.config.learner import LoraSettings


def constant_optimizer(model: nn.Module, lr: float, grad_clip: float) -> TrainingState:
    """`model` with AdamW at a constant rate (`learner.optim.constant_rate`)."""
    return TrainingState(model, *constant_rate(model, lr, grad_clip))


def disable_dropout(model: nn.Module) -> nn.Module:
    """No dropout anywhere in `model` (LoRA's included): the ratio of the policy to the one that sampled
    must be exactly 1 before the update (TRL's disable_dropout likewise)."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    return model


def load_critic(init_dir: Path, *, context: DistContext, dtype: torch.dtype, pad_token_id: int) -> nn.Module:
    """A value head on every token, from a reward model's (or the policy's) directory; float32 masters, sharded."""
    config = AutoConfig.from_pretrained(init_dir, num_labels=1)
    config.classifier_dropout = 0.0  # the default 0.1 would make every value a noisy one
    config.token_classification_bias = False  # the reward model's head has no bias: its weights load as they are
    critic: nn.Module = AutoModelForTokenClassification.from_pretrained(init_dir, config=config, dtype=torch.float32)
    critic.config.pad_token_id = pad_token_id  # type: ignore[union-attr]
    critic.to(device=context.device)
    shard_model(critic, dtype)
    return critic


def token_values(critic: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """V of the state before each target token (the value read where the policy's logits for it are), (B, L-1)."""
    values: torch.Tensor = critic(input_ids=input_ids, attention_mask=attention_mask).logits[..., 0]
    return values[:, :-1].float()


@dataclass(frozen=True)
class Reference:
    """The frozen starting policy: a model of its own, or (LoRA) the actor with its adapter off."""

    model: nn.Module
    adapter_off: bool

    @contextlib.contextmanager
    def active(self) -> Iterator[nn.Module]:
        if not self.adapter_off:
            yield self.model
            return
        with self.model.disable_adapter():  # type: ignore[operator]
            yield self.model


def load_reference(
    actor: nn.Module,
    model_dir: Path,
    *,
    lora: LoraSettings,
    context: DistContext,
    dtype: torch.dtype,
    pad_token_id: int,
) -> Reference:
    if lora.enabled:
        return Reference(actor, adapter_off=True)
    frozen = load_trainable(
        model_dir, reward_model=False, lora=lora, context=context, dtype=dtype, pad_token_id=pad_token_id
    )
    frozen.requires_grad_(False)
    return Reference(frozen.eval(), adapter_off=False)
