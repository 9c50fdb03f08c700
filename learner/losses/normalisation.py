"""Putting rewards and advantages on a common scale: whitening within a batch, running moments across batches."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from learner.losses.common import masked_mean


@torch.no_grad()
def masked_whiten(values: torch.Tensor, mask: torch.Tensor, *, shift_mean: bool = True) -> torch.Tensor:
    """Whitening over the tokens of a batch that `mask` marks (earlier TRL's `trl.core.masked_whiten`):

        mu = sum(m x) / sum(m)     sigma^2 = sum(m (x - mu)^2) / (sum(m) - 1)
        x' = (x - mu) / sqrt(sigma^2 + 1e-8)           shift_mean=True   (advantages, after `gae`)
        x' = (x - mu) / sqrt(sigma^2 + 1e-8) + mu      shift_mean=False  (rewards: rescaled, not recentred)

    Shapes (B, T). One mean and variance over every marked token of the batch (not per row). The variance
    is Bessel-corrected and the 1e-8 added to it, both as TRL's. Departures from TRL: the result is 0
    outside the mask (TRL's holds whatever whitening made of the padding), and fewer than two marked tokens
    raise ValueError (TRL raises for none and divides by zero for one).
    """
    count = mask.sum()
    if count < 2:
        raise ValueError(f"whitening needs at least two masked-in values, got {count.item():g}")
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask) * count / (count - 1)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return (whitened if shift_mean else whitened + mean) * mask


@dataclass(frozen=True)
class RunningMoments:
    """Count, mean and sum of squared deviations (M2) of every value seen so far; updated by
    `update_running_moments`, checkpointed as `dataclasses.asdict` (plain floats)."""

    count: int = 0
    mean: float = 0.0
    sum_squared_deviations: float = 0.0

    @property
    def std(self) -> float:
        """The unbiased sample std, sqrt(M2 / (n - 1)); NaN before two values."""
        return math.sqrt(self.sum_squared_deviations / (self.count - 1)) if self.count > 1 else math.nan


@torch.no_grad()
def update_running_moments(moments: RunningMoments, values: torch.Tensor) -> RunningMoments:
    """The moments of everything seen, merging a batch by Chan et al.'s parallel update (1979; Welford's
    for a batch of one):

        n = n_a + n_b      delta = mean_b - mean_a
        mean = mean_a + delta n_b / n
        M2 = M2_a + M2_b + delta^2 n_a n_b / n

    `values` of any shape (all elements count), e.g. the (B,) sequence rewards of a step. Returns a new
    record; `moments` is unchanged. Batch statistics in float64. Equals earlier TRL's `RunningMoments.update` (as
    its PPOTrainer used it for use_score_scaling) up to float32 rounding; TRL starts from a pseudo-count
    of 1e-24 with variance 1 where we start from nothing, which changes nothing measurable.
    """
    batch = values.detach().double().flatten()
    if batch.numel() == 0:
        return moments
    batch_count, batch_mean = batch.numel(), batch.mean().item()
    batch_sum_squared_deviations = ((batch - batch_mean) ** 2).sum().item()
    count = moments.count + batch_count
    delta = batch_mean - moments.mean
    return RunningMoments(
        count=count,
        mean=moments.mean + delta * batch_count / count,
        sum_squared_deviations=moments.sum_squared_deviations
        + batch_sum_squared_deviations
        + delta**2 * moments.count * batch_count / count,
    )


def normalise_rewards(rewards: torch.Tensor, moments: RunningMoments, *, shift_mean: bool = True) -> torch.Tensor:
    """Rewards on the running scale, as earlier TRL's PPOTrainer (use_score_scaling, use_score_norm):

        r' = (r - mean) / (std + eps)     shift_mean=True
        r' =  r / (std + eps)             shift_mean=False

    with mean and the unbiased std from `moments` (update them with this batch first, as TRL does) and eps
    the machine epsilon of `rewards`' dtype. Same shape as `rewards`. Needs moments of two values or more.
    """
    if moments.count < 2:
        raise ValueError(f"normalising needs the moments of at least two rewards, got {moments.count}")
    scale = moments.std + torch.finfo(rewards.dtype).eps
    return ((rewards - moments.mean) if shift_mean else rewards) / scale
