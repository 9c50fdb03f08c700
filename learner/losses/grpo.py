"""GRPO's loss: PPO's clipped surrogate on group-relative advantages, with a k3 KL to the reference in the loss."""

from __future__ import annotations

import torch

from learner.losses.common import Metrics, masked_mean
from learner.losses.ppo import clipped_surrogate, kl_k3, surrogate_metrics

# How per-token losses become one number, by name (TRL 1.16 GRPOConfig.loss_type in brackets):
#   sequence_mean  each completion's token mean, then the mean over completions  (grpo; the paper's)
#   token_mean     the mean over every token of the batch                         (bnpo; dapo for a whole batch)
#   fixed_length   the sum over tokens / (B * max_length), a constant normaliser  (dr_grpo)
LOSS_AGGREGATIONS = ("sequence_mean", "token_mean", "fixed_length")


def aggregate_token_losses(
    per_token_loss: torch.Tensor, mask: torch.Tensor, *, aggregation: str, max_length: int | None = None
) -> torch.Tensor:
    """One of `LOSS_AGGREGATIONS` of (B, T) per-token losses over the tokens `mask` marks; `max_length` (the
    generation's token limit, not this batch's width) is needed by, and only by, "fixed_length"."""
    if aggregation == "sequence_mean":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if aggregation == "token_mean":
        return masked_mean(per_token_loss, mask)
    if aggregation == "fixed_length":
        if max_length is None:
            raise ValueError('aggregation="fixed_length" needs max_length, the generation limit in tokens')
        return (per_token_loss * mask).sum() / (per_token_loss.shape[0] * max_length)
    raise ValueError(f"unknown aggregation {aggregation!r}; expected one of {LOSS_AGGREGATIONS}")


def grpo_loss(
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    reference_logps: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    clip_ratio: float,
    kl_coef: float,
    aggregation: str = "sequence_mean",
    max_length: int | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """GRPO (Shao et al. 2024, DeepSeekMath, arXiv:2402.03300, eq. 3), as a loss to minimise:

        rho_it = exp(log pi_theta(o_it) - log pi_old(o_it))
        D_it = pi_ref(o_it)/pi_theta(o_it) - log(pi_ref(o_it)/pi_theta(o_it)) - 1          (k3, `ppo.kl_k3`)
        L = - 1/G sum_i 1/|o_i| sum_t [ min(rho_it A_i, clip(rho_it, 1 - eps, 1 + eps) A_i) - beta D_it ]

    Shapes (B, T): `logps` under the policy being trained (with gradient, through the surrogate and the KL),
    `old_logps` under the sampling policy, `reference_logps` under the reference (None when `kl_coef` is 0),
    `mask`; `advantages` (B,) one per completion (`advantages.grpo_advantages`, `rloo_advantages`) or (B, T).
    eps = `clip_ratio`, beta = `kl_coef`. The default aggregation, "sequence_mean", is the paper's 1/G sum_i
    1/|o_i| sum_t, averaged over all B completions of the batch (the same as over groups, which are of equal
    size); the others are in `LOSS_AGGREGATIONS`: Yu et al. 2025 (DAPO, arXiv:2503.14476) and Liu et al. 2025
    (Dr. GRPO, arXiv:2503.20783) argue that the paper's 1/|o_i| gives each token of a long response less
    weight, so long wrong answers are penalised less.
    Matches TRL 1.16 GRPOTrainer._compute_loss with importance_sampling_level="token", epsilon_low =
    epsilon_high, no delta, no entropy masking or bonus, no vLLM importance-sampling correction, evaluated
    whole (TRL divides by the gradient-accumulation steps in training; here that is the caller's).
    Metrics: loss; `ppo.surrogate_metrics`' clip_fraction and approx_kl; kl, the token mean of D_it (when
    a reference is given).
    """
    token_advantages = advantages if advantages.dim() == 2 else advantages[:, None]
    per_token_loss = clipped_surrogate(logps, old_logps, token_advantages, clip_ratio=clip_ratio)
    kl = None
    if reference_logps is not None:
        kl = kl_k3(logps, reference_logps.detach())
        per_token_loss = per_token_loss + kl_coef * kl
    elif kl_coef != 0:
        raise ValueError("kl_coef != 0 needs reference_logps")
    loss = aggregate_token_losses(per_token_loss, mask, aggregation=aggregation, max_length=max_length)
    metrics = {"loss": loss.detach()} | surrogate_metrics(
        logps, old_logps, token_advantages, mask, clip_ratio=clip_ratio
    )
    if kl is not None:
        metrics["kl"] = masked_mean(kl.detach(), mask)
    return loss, metrics
