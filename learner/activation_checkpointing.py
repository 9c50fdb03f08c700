"""Activation checkpointing: keep only each transformer block's input in the forward pass and recompute
the block's activations during the backward pass (memory for about one more forward's compute).

Each block is wrapped in torch's checkpoint wrapper, non-reentrant (`torch.utils.checkpoint` with
use_reentrant=False: works with keyword arguments, with inputs that need no grad, and under FSDP2),
BEFORE `fully_shard`, so that every FSDP group is exactly one checkpointed block, as torchtitan does.
The wrapper's `_checkpoint_wrapped_module.` prefix never reaches a state dict:
torch.distributed.checkpoint.state_dict strips it, so checkpoints and published weights keep the
model's own parameter names.
"""

from __future__ import annotations

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    CheckpointWrapper,
    checkpoint_wrapper,
)

from learner.distributed import find_decoder_layers
from trimtab.errors import TrimtabError


def checkpoint_blocks(model: nn.Module) -> int:
    """Wrap every transformer block of an HF causal LM (plain or peft) in place; returns how many."""
    layers = decoder_layers(model)
    for index, block in enumerate(layers):
        if not isinstance(block, CheckpointWrapper):
            layers[index] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
    return len(layers)


def checkpointed_blocks(model: nn.Module) -> int:
    """How many modules of `model` run under activation checkpointing."""
    return sum(isinstance(module, CheckpointWrapper) for module in model.modules())


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layers (`learner.distributed.find_decoder_layers`); an error when there are none."""
    layers = find_decoder_layers(model)
    if layers is None:
        raise TrimtabError(
            f"learner.train.activation_checkpointing: no decoder layers (model.layers) in {type(model).__name__}"
        )
    return layers
