"""What every loss module shares: the metrics type and the masked token mean."""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Detached 0-dim tensors on the loss's device. Reading one on the host waits for the device to finish the
# forward pass (on a GPU, an idle device while the backward is not yet queued): callers sum them on the
# device and read a step's metrics together, once (`read_metrics`).
Metrics = dict[str, torch.Tensor]


def read_metrics(metrics: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The metrics as Python floats, read from the device in one transfer."""
    if not metrics:
        return {}
    values = torch.stack([value.detach().to(torch.float64) for value in metrics.values()]).tolist()
    return dict(zip(metrics, values, strict=True))


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
