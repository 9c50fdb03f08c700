"""What every loss module shares: the metrics type and the masked token mean."""

from __future__ import annotations

import torch

Metrics = dict[str, float]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / sum(mask) over every element (a token mean, not a mean of per-row means).

    A mask with no ones gives 0 rather than NaN.
    """
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def example_mean(losses: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """mean_i w_i l_i over the examples (w = 1 when None).

    Not renormalised by sum(w): an example weighted 0.5 (a flagged user's, or one corrected by
    importance weighting) contributes half as much gradient, rather than the others contributing more.
    """
    return losses.mean() if weights is None else (losses * weights).mean()
