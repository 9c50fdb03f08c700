"""The optimisation of one step: `rl.epochs` passes over the step's answers, each cut into `rl.minibatches`
optimiser steps; each rank takes an equal share of a minibatch's rows, in micro-batches.

Every micro-batch's loss is weighted by its share of the minibatch (of its answers for per-answer means,
of its response tokens for token means), so the sum over micro-batches and ranks is the minibatch's loss
whatever the split: 1 rank or 2, any micro-batch size, the same curve (as `learner.engine`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from learner.checkpoint import TrainingState
from learner.distributed import DistContext, all_reduce_sum, clip_grad_norm
from learner.losses import Metrics, grpo_loss, ppo_policy_loss, ppo_value_loss, read_metrics
from learner.rl.batch import RolloutBatch, policy_logps
from learner.rl.roles import token_values
from learner.rl.targets import Measured, Targets
from trimtab.config.rl import RLConfig

POLICY_METRICS = ("loss", "clip_fraction", "approx_kl")


@dataclass(frozen=True)
class StepData:
    """Everything the update reads for the step's B answers (rows in rollout order)."""

    batch: RolloutBatch
    measured: Measured
    targets: Targets


@dataclass(frozen=True)
class Update:
    algorithm: str
    rl: RLConfig
    kl_coef: float  # GRPO's beta in the loss (the reward carries it for PPO and RLOO)
    temperature: float
    micro_batch_size: int
    grad_clip: float


def update(
    actor: TrainingState,
    critic: TrainingState | None,
    data: StepData,
    settings: Update,
    *,
    context: DistContext,
    seed: int,
) -> dict[str, float]:
    """Train the actor (and the critic) on the step's data; the last minibatch's metrics, all ranks summed."""
    metrics: dict[str, float] = {}
    for epoch in range(settings.rl.epochs):
        for minibatch in minibatches(data.batch.size, settings.rl.minibatches, seed=seed * 1000 + epoch):
            metrics = _minibatch(actor, critic, data, minibatch, settings, context)
    return metrics


def minibatches(rows: int, count: int, *, seed: int) -> list[list[int]]:
    order = list(range(rows))
    random.Random(seed).shuffle(order)
    size = rows // count
    return [order[k * size : (k + 1) * size] for k in range(count)]


def _minibatch(
    actor: TrainingState,
    critic: TrainingState | None,
    data: StepData,
    rows: Sequence[int],
    settings: Update,
    context: DistContext,
) -> dict[str, float]:
    mine = rank_rows(rows, context)
    tokens = float(data.batch.mask[list(rows)].sum())
    micros = [mine[s : s + settings.micro_batch_size] for s in range(0, len(mine), settings.micro_batch_size)]
    names = (*POLICY_METRICS, *(("value_loss", "value_clip_fraction") if critic else ()))
    totals = torch.zeros(len(names), dtype=torch.float64, device=context.device)
    models = [state.model for state in (actor, critic) if state is not None]
    for k, micro in enumerate(micros):
        for model in models:
            set_sync = getattr(model, "set_requires_gradient_sync", None)
            if set_sync is not None:
                set_sync(k == len(micros) - 1)
        loss, values = _micro_loss(actor, critic, data, micro, settings, answers=len(rows), tokens=tokens)
        (loss * context.world_size).backward()  # FSDP averages over ranks; ours sum to the minibatch's loss
        totals += torch.stack([values[name] for name in names]).to(totals)
    metrics = dict(zip(names, all_reduce_sum(totals), strict=True))
    for name, state in (("actor", actor), ("critic", critic)):
        if state is not None:
            metrics[f"{name}_grad_norm"] = clip_grad_norm(state.model, settings.grad_clip)
            state.optimizer.step()
            state.scheduler.step()
            state.optimizer.zero_grad(set_to_none=True)
    return read_metrics(metrics)  # the minibatch's one host sync


def _micro_loss(
    actor: TrainingState,
    critic: TrainingState | None,
    data: StepData,
    micro: list[int],
    settings: Update,
    *,
    answers: int,
    tokens: float,
) -> tuple[torch.Tensor, Metrics]:
    """The micro-batch's loss, weighted by its share of the minibatch, and its weighted metrics."""
    device = next(actor.model.parameters()).device
    rows = data.batch.rows(micro)
    token_share = float(rows.mask.sum()) / tokens  # on the host: no wait for the device
    batch = rows.to(device)
    old = data.measured.old_logps[micro].to(device)
    advantages = data.targets.advantages[micro].to(device)
    logps = policy_logps(actor.model, batch, settings.temperature)
    if settings.algorithm == "grpo":
        aggregation = settings.rl.grpo.aggregation
        reference = data.measured.reference_logps[micro].to(device) if settings.kl_coef else None
        loss, metrics = grpo_loss(
            logps=logps,
            old_logps=old,
            reference_logps=reference,
            advantages=advantages,
            mask=batch.mask,
            clip_ratio=settings.rl.clip_ratio,
            kl_coef=settings.kl_coef,
            aggregation=aggregation,
        )
        share = len(micro) / answers if aggregation == "sequence_mean" else token_share
    else:
        token_advantages = advantages if advantages.dim() == 2 else advantages[:, None].expand_as(logps)
        clip_ratio = settings.rl.ppo.clip_ratio if settings.algorithm == "ppo" else settings.rl.clip_ratio
        loss, metrics = ppo_policy_loss(logps, old, token_advantages, batch.mask, clip_ratio=clip_ratio)
        share = token_share
    weighted = {name: metrics[name] * share for name in POLICY_METRICS}
    loss = loss * share
    if critic is not None:
        assert data.targets.returns is not None and data.measured.old_values is not None
        values = token_values(critic.model, batch.input_ids, batch.attention_mask)
        value_loss, value_metrics = ppo_value_loss(
            values=values,
            old_values=data.measured.old_values[micro].to(device),
            returns=data.targets.returns[micro].to(device),
            mask=batch.mask,
            clip_range=settings.rl.ppo.value_clip,
        )
        loss = loss + settings.rl.ppo.value_coef * value_loss * token_share
        weighted |= {
            "value_loss": value_metrics["loss"] * token_share,
            "value_clip_fraction": value_metrics["clip_fraction"] * token_share,
        }
    return loss, weighted


def rank_rows(rows: Sequence[int], context: DistContext) -> list[int]:
    """This rank's contiguous share of `rows` (every rank gets as many)."""
    per_rank, rest = divmod(len(rows), context.world_size)
    if rest:
        raise ValueError(f"{len(rows)} rows cannot be shared equally by {context.world_size} ranks")
    return list(rows[context.rank * per_rank : (context.rank + 1) * per_rank])
