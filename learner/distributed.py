"""torch.distributed for the learner: one code path for torchrun ranks and a single process.

Under torchrun (WORLD_SIZE set) the configured backend joins the ranks: gloo on CPU, nccl on GPUs.
Without torchrun we still open a one-rank gloo group in memory, so that the collectives and the
state-dict gathering run the very same code at world size 1. FSDP2 itself is skipped there (see
`shard_model`): with nothing to shard it was pure overhead, and mixed precision runs under autocast.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

from trimtab.config import LearnerConfig
from trimtab.errors import TrimtabError

T = TypeVar("T")


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    owns_group: bool  # whether `shutdown` should destroy the process group (we created it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(config: LearnerConfig) -> DistContext:
    """Join torchrun's ranks (or a one-rank group) and pick this rank's device."""
    owns_group = not dist.is_initialized()
    if owns_group and "WORLD_SIZE" in os.environ:
        dist.init_process_group(config.backend)
    elif owns_group:
        # An in-memory store: nothing to rendezvous with, no port to collide on in tests.
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    device = torch.device(config.device)
    if config.device == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return DistContext(dist.get_rank(), dist.get_world_size(), device, owns_group)


def shutdown(context: DistContext) -> None:
    if context.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_model(model: nn.Module, dtype: torch.dtype) -> None:
    """FSDP2 over several ranks: each transformer block is its own shard group (all-gathered just in time),
    then the root. Parameters stay float32 masters; for bf16/fp16 FSDP casts them for compute and reduces
    gradients in float32, so the optimiser never updates low-precision weights.

    One rank keeps the plain module: with nothing to shard, FSDP2 only copies every parameter in and out of
    its all-gather buffers on each forward and backward and routes the optimiser and gradient clipping
    through DTensor dispatch: 20-30% of a DPO or KTO step of the default model on 2 CPU threads
    (bench/learner.py), and on an H200 in bf16 its casts were 28% of the GPU's time (../shared/gpu-check,
    2026-12-04: the plain module under autocast stepped 1.55x faster). There a bf16/fp16 forward runs
    under `torch.autocast` over the same float32 masters (`autocast_forward`), as TRL trains. Everything
    downstream takes either form (`reshard`, gradient-sync toggling, `clip_grad_norm`, the state-dict
    helpers); the 2-rank tests keep FSDP2 covered.
    """
    if (dist.get_world_size() if dist.is_initialized() else 1) == 1:
        if dtype != torch.float32:
            autocast_forward(model, dtype)
        return
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32)
    for block in find_decoder_layers(model) or ():
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)


def autocast_forward(model: nn.Module, dtype: torch.dtype) -> None:
    """Run every call of `model` (training forwards, reference passes, `generate`'s steps) under
    `torch.autocast(dtype)`: matrix products in `dtype` from the float32 parameters, which keep their
    float32 gradients. Autograd replays the casts in the backward pass, and activation checkpointing
    recomputes a block under the autocast state it was first run in."""
    forward = model.forward
    device_type = next(model.parameters()).device.type

    @functools.wraps(forward)  # transformers reads the signature of `forward` (generate's argument check)
    def forward_under_autocast(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, dtype=dtype):
            return forward(*args, **kwargs)

    model.forward = forward_under_autocast


def find_decoder_layers(model: nn.Module) -> nn.ModuleList | None:
    """The decoder layers of an HF model (`model.model.layers` for Llama, Qwen, Mistral, ..., for causal LMs
    and sequence classifiers alike; peft models unwrapped), or None when it has none."""
    get_base_model = getattr(model, "get_base_model", None)  # a peft PeftModel
    base = get_base_model() if callable(get_base_model) else model
    layers = getattr(getattr(base, "model", None), "layers", None)
    return layers if isinstance(layers, nn.ModuleList) else None


def reshard(model: nn.Module) -> None:
    """Free the gathered full parameters after forwards without backward (no_grad passes).

    FSDP2 keeps the root group gathered after a forward, expecting the backward that reshards it; after
    a no_grad pass nothing does, and `model.parameters()` would then hand out the gathered copies
    instead of the sharded parameters the optimiser must update.
    """
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place and returned; at world size 1 the tensor as it is (a gloo all-reduce of
    one rank still costs ~0.1 ms, a percent of a small model's step)."""
    if dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def clip_grad_norm(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Clip the global gradient norm (over every rank's shards) and return it before clipping, on the device
    (read it with the step's metrics: reading it alone is a host sync)."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    return norm.full_tensor() if isinstance(norm, DTensor) else norm


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights on CPU, on rank 0 (other ranks get an empty dict). Every rank must call it."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return {name: value for name, value in state.items() if isinstance(value, torch.Tensor)}


def broadcast(value: T) -> T:
    """Rank 0's `value` (any picklable object) on every rank. Every rank must call it."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's `tensor` (the same shape on each) stacked along rows in rank order; at world size 1 the
    tensor itself. Every rank must call it."""
    if dist.get_world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def from_main(make: Callable[[], T], context: DistContext) -> T:
    """What `make()` returns on rank 0 (which alone calls it), on every rank. Every rank must call it.

    If `make()` raises, rank 0 raises it and every other rank raises a TrimtabError naming it: none is
    left waiting for a broadcast that never comes."""
    outcome: tuple[bool, object] = (True, None)
    failure: BaseException | None = None
    if context.is_main:
        try:
            outcome = (True, make())
        except Exception as exc:
            failure, outcome = exc, (False, f"{type(exc).__name__}: {exc}")
    ok, value = broadcast(outcome)
    if failure is not None:
        raise failure
    if not ok:
        raise TrimtabError(f"rank 0 failed: {value}")
    return value  # type: ignore[return-value]
