"""The step's batch under the models as they are before the update: the actor's log-probs (the PPO ratio's
denominator, and the check on the rollout engine), the reference's, and the critic's values. Each rank
measures an equal share of the rows, in micro-batches, and the shares are gathered: every rank ends with
the whole step's tensors, on the CPU."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from learner.distributed import DistContext, all_gather_rows, reshard
from learner.losses import masked_mean
from learner.rl.batch import RolloutBatch, policy_logps
from learner.rl.roles import Reference, token_values
from learner.rl.targets import Measured
from learner.rl.update import rank_rows

Forward = Callable[[RolloutBatch], torch.Tensor]


@torch.no_grad()
def measure(
    *,
    actor: nn.Module,
    reference: Reference,
    critic: nn.Module | None,
    batch: RolloutBatch,
    temperature: float,
    micro_batch_size: int,
    context: DistContext,
) -> Measured:
    rows = rank_rows(range(batch.size), context)

    def on_rows(model: nn.Module, forward: Forward) -> torch.Tensor:
        return _gathered(model, forward, batch, rows, micro_batch_size, context)

    old = on_rows(actor, lambda b: policy_logps(actor, b, temperature))
    with reference.active() as frozen:
        reference_logps = on_rows(frozen, lambda b: policy_logps(frozen, b, temperature))
    values = None
    if critic is not None:
        values = on_rows(critic, lambda b: token_values(critic, b.input_ids, b.attention_mask))
    return Measured(old, reference_logps, values)


def _gathered(
    model: nn.Module,
    forward: Forward,
    batch: RolloutBatch,
    rows: Sequence[int],
    micro_batch_size: int,
    context: DistContext,
) -> torch.Tensor:
    was_training = model.training
    model.eval()
    parts = [
        forward(batch.rows(rows[s : s + micro_batch_size]).to(context.device)).float()
        for s in range(0, len(rows), micro_batch_size)
    ]
    reshard(model)
    model.train(was_training)
    mine = torch.cat(parts) * batch.mask[list(rows)].to(context.device)
    return all_gather_rows(mine).cpu()


def engine_drift(measured: Measured, batch: RolloutBatch) -> dict[str, float]:
    """How far the rollout engine's sampling log-probs are from the trainer's own for the same tokens and
    weights: a refit or numerics bug shows here first (float32 on CPU: about 1e-6 per token)."""
    gap = (measured.old_logps - batch.engine_logps).abs() * batch.mask
    return {
        "engine_logp_drift_mean": masked_mean(gap, batch.mask).item(),
        "engine_logp_drift_max": float(gap.max()),
    }
