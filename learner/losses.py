"""Alignment losses as pure functions of tensors.

Conventions: `token_logps` are log pi_theta(y_t | x, y_<t) of the target tokens, shape (B, T);
`loss_mask` is 1.0 on the tokens a loss may count (response tokens, never the prompt or padding),
shape (B, T). Each loss returns `(loss, metrics)` where metrics are detached scalars for logging.
"""

from __future__ import annotations

import torch

Metrics = dict[str, float]


def sft_loss(token_logps: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """Supervised fine-tuning negative log-likelihood, averaged over response tokens.

        L_SFT = - sum_{i,t} m_{i,t} log pi_theta(y_{i,t} | x_i, y_{i,<t}) / sum_{i,t} m_{i,t}

    Token-level mean (not a mean of per-sequence means), so long responses weigh by their length,
    as in NeMo-Aligner's and TRL's SFT. With gradient accumulation the caller must divide by the
    token count of the whole accumulated batch, not per micro-batch, for the two to agree.
    """
    tokens = loss_mask.sum()
    loss = -(token_logps * loss_mask).sum() / tokens.clamp(min=1.0)
    return loss, {"loss": loss.item(), "tokens": tokens.item()}
