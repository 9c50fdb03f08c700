"""What every loss module shares: the metrics type and the masked token mean."""

from __future__ import annotations

import torch

Metrics = dict[str, float]


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum(values * mask) / sum(mask) over every element (a token mean, not a mean of per-row means).

    A mask with no ones gives 0 rather than NaN.
    """
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
