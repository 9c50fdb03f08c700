"""Supervised fine-tuning negative log-likelihood."""

from __future__ import annotations

import torch

from learner.losses.common import Metrics


def sft_loss(
    token_logps: torch.Tensor, loss_mask: torch.Tensor, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, Metrics]:
    """Supervised fine-tuning negative log-likelihood, averaged over response tokens.

        L_SFT = - sum_{i,t} m_{i,t} log pi_theta(y_{i,t} | x_i, y_{i,<t}) / sum_{i,t} m_{i,t}

    Token-level mean (not a mean of per-sequence means), so long responses weigh by their length,
    as in NeMo-Aligner's and TRL's SFT. With gradient accumulation the caller must divide by the
    token count of the whole accumulated batch, not per micro-batch, for the two to agree.
    `weights` (B,), per sequence, scale each sequence's tokens (the online learner's example weights);
    the denominator stays the unweighted token count.
    """
    tokens = loss_mask.sum()
    weighted_mask = loss_mask if weights is None else loss_mask * weights[:, None]
    loss = -(token_logps * weighted_mask).sum() / tokens.clamp(min=1.0)
    return loss, {"loss": loss.detach(), "tokens": tokens}
