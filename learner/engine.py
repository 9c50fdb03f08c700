"""The training loop: global batches cut the same way on every rank, each rank's share split into
micro-batches, gradients accumulated, one optimiser step per global batch.

Every rank holds the whole (small, tokenised) data set and draws the same global batches from the
same seed; rank r trains on the r-th contiguous slice of each. So 1 rank x 2 micro-batches and
2 ranks x 1 micro-batch see the same examples in each step and, since objectives weight each
micro-batch by its share of the global batch, compute the same loss and gradient.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from learner.batching import BUCKET_WINDOW_BATCHES
from learner.checkpoint import TrainingState
from learner.data import TrainExample
from learner.distributed import DistContext, all_reduce_sum, clip_grad_norm, reshard
from learner.losses import read_metrics
from learner.objectives import GlobalStats, MicroBatch, Objective, kto_kl_sum
from trimtab.errors import TrimtabError

OnStep = Callable[[int, int, dict[str, float]], None]  # (step, examples in the step, metrics)
OnCheckpoint = Callable[[int], None]  # (step): save a checkpoint of the state after that step


@dataclass(frozen=True)
class LoopSettings:
    batch_size: int  # global, all ranks
    micro_batch_size: int  # per forward pass on one rank
    steps: int
    seed: int
    grad_clip: float
    start_step: int = 0  # steps already done (a resumed run): the loop continues with step start_step + 1
    checkpoint_every: int = 0  # call on_checkpoint after every this many steps (never after the last); 0: never


def global_batches(
    examples: Sequence[TrainExample], batch_size: int, seed: int, start_step: int = 0
) -> Iterator[list[int]]:
    """Endless length-bucketed batches of example indices, epoch after epoch; incomplete ones dropped
    so that every rank always gets an equal share. Each epoch is a function of (seed, epoch) alone, so
    a resumed run starts at batch `start_step` without replaying the ones before it."""
    if len(examples) < batch_size:
        raise TrimtabError(f"{len(examples)} examples cannot fill one batch of learner.train.batch_size={batch_size}")
    first_epoch, skip = divmod(start_step, batches_per_epoch(len(examples), batch_size))
    for epoch in range(first_epoch, 1_000_000):
        yield from epoch_batches(examples, batch_size, seed, epoch)[skip:]
        skip = 0


def epoch_batches(examples: Sequence[TrainExample], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    rng = random.Random(f"{seed}:{epoch}")
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * BUCKET_WINDOW_BATCHES
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i]))
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size))
    rng.shuffle(batches)
    return batches


def batches_per_epoch(n_examples: int, batch_size: int) -> int:
    """How many batches `epoch_batches` cuts: every full window gives BUCKET_WINDOW_BATCHES."""
    full_windows, rest = divmod(n_examples, batch_size * BUCKET_WINDOW_BATCHES)
    return full_windows * BUCKET_WINDOW_BATCHES + rest // batch_size


def rank_share(batch: list[int], context: DistContext) -> list[int]:
    if len(batch) % context.world_size:
        raise TrimtabError(f"batch size {len(batch)} is not divisible by the {context.world_size} ranks")
    per_rank = len(batch) // context.world_size
    return batch[context.rank * per_rank : (context.rank + 1) * per_rank]


def train(
    state: TrainingState,
    examples: Sequence[TrainExample],
    reference: torch.Tensor,
    objective: Objective,
    settings: LoopSettings,
    *,
    context: DistContext,
    pad_token_id: int,
    on_step: OnStep,
    on_checkpoint: OnCheckpoint | None = None,
) -> dict[str, float]:
    """Run optimiser steps `settings.start_step + 1` to `settings.steps` on `state`'s model with its optimiser
    and scheduler (not its companion's); returns the last step's metrics."""
    model, optimizer, scheduler = state.model, state.optimizer, state.scheduler
    model.train()
    metrics: dict[str, float] = {}
    batches = global_batches(examples, settings.batch_size, settings.seed, settings.start_step)
    for step in range(settings.start_step + 1, settings.steps + 1):
        batch = next(batches)
        mine = rank_share(batch, context)
        chunks = [mine[s : s + settings.micro_batch_size] for s in range(0, len(mine), settings.micro_batch_size)]
        micros = [MicroBatch([examples[i] for i in chunk], reference[chunk]) for chunk in chunks]
        stats = global_stats(model, examples, batch, micros, objective, context, pad_token_id)
        totals = accumulate(model, micros, stats, objective, pad_token_id, context)
        grad_norm = clip_grad_norm(model, settings.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        # The step's one host sync, once all of its work is queued on the device.
        metrics = read_metrics(dict(zip(objective.metric_names, totals, strict=True)) | {"grad_norm": grad_norm})
        metrics["lr"] = float(scheduler.get_last_lr()[0])
        on_step(step, len(batch), metrics)
        if on_checkpoint is not None and _checkpoint_due(step, settings):
            on_checkpoint(step)
    return metrics


def _checkpoint_due(step: int, settings: LoopSettings) -> bool:
    # None after the last step: the run's result (a published version) is what survives it.
    return settings.checkpoint_every > 0 and step % settings.checkpoint_every == 0 and step < settings.steps


def global_stats(
    model: nn.Module,
    examples: Sequence[TrainExample],
    batch: list[int],
    micros: list[MicroBatch],
    objective: Objective,
    context: DistContext,
    pad_token_id: int,
) -> GlobalStats:
    # Every rank has the whole batch's tokens; only KTO's KL estimate needs the ranks' forwards.
    tokens = float(sum(sum(examples[i].sequences[0].loss_mask) for i in batch))
    kl = None
    if objective.needs_kl_estimate:
        local = torch.zeros(1, device=context.device)  # a rank may hold no example of a small batch
        for micro in micros:
            local += kto_kl_sum(model, micro, pad_token_id).to(context.device)
        reshard(model)
        kl = all_reduce_sum(local) / len(batch)
    return GlobalStats(examples=len(batch), response_tokens=tokens, kto_kl=kl)


def accumulate(
    model: nn.Module,
    micros: list[MicroBatch],
    stats: GlobalStats,
    objective: Objective,
    pad_token_id: int,
    context: DistContext,
) -> torch.Tensor:
    """Forward and backward every micro-batch (gradients are reduced across ranks on the last only); the
    objective's metrics summed over micro-batches and ranks, on the device, in `metric_names` order."""
    totals = torch.zeros(len(objective.metric_names), dtype=torch.float64, device=context.device)
    for k, micro in enumerate(micros):
        set_sync = getattr(model, "set_requires_gradient_sync", None)
        if set_sync is not None:
            set_sync(k == len(micros) - 1)
        loss, metrics = objective.compute(model, micro, stats, pad_token_id)
        # FSDP averages gradients over ranks (DDP's convention: each rank's loss a local mean), while
        # ours sum to the global batch's loss over ranks: scale up so the average is that sum.
        (loss * context.world_size).backward()
        totals += torch.stack([metrics[name] for name in objective.metric_names]).to(totals)
    return all_reduce_sum(totals)
