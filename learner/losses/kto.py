"""Kahneman-Tversky Optimization: a loss on unpaired desirable / undesirable examples."""

from __future__ import annotations

import torch

from learner.losses.common import Metrics, example_mean, masked_mean


def kto_loss(
    policy_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    desirable: torch.Tensor,
    policy_kl_logps: torch.Tensor,
    reference_kl_logps: torch.Tensor,
    *,
    beta: float,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.0,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """KTO (Ethayarajh et al. 2024, arXiv:2402.01306) with the paper's batch estimate of the reference point:

        r(x, y) = log pi_theta(y|x) - log pi_ref(y|x)
        z_0 = max(0, mean_j [ log pi_theta(y'_j|x_j) - log pi_ref(y'_j|x_j) ])      (no gradient)
        v(x, y) = lambda_D sigma(beta (r(x, y) - z_0))   if y is desirable
                  lambda_U sigma(beta (z_0 - r(x, y)))   if y is undesirable
        L_KTO = E[ lambda_y - v(x, y) ]

    Shapes: `policy_logps`, `reference_logps` (B,) summed response log-probs; `desirable` (B,) bool;
    `policy_kl_logps`, `reference_kl_logps` (K,) summed log-probs of mismatched completions y'_j, that
    is another example's response to prompt x_j (TRL pairs x_j with y_{(j+1) mod B}); their mean log-ratio
    estimates KL(pi_theta || pi_ref), the reference point z_0. As in the paper, z_0 is detached and
    clamped at 0. Under data parallelism pass the mismatched log-probs gathered from all ranks, so that z_0
    is the global batch's, as TRL does. lambda_D, lambda_U are `desirable_weight`, `undesirable_weight`
    (the paper advises lambda_D n_D / (lambda_U n_U) in [1, 4/3]). The loss is the plain mean over the
    batch, as in TRL's KTOTrainer (loss_type="kto"), or with per-example `weights` (B,) the mean of
    w_i (lambda_y - v_i) (common.example_mean); lambda_y - v is written lambda_y sigma(-.).
    Metrics' rewards are beta * r(x, y) over the desirable and the undesirable examples.
    """
    logratios = policy_logps - reference_logps.detach()
    kl = (policy_kl_logps - reference_kl_logps).mean().detach().clamp(min=0)
    losses = torch.where(
        desirable,
        desirable_weight * torch.sigmoid(-beta * (logratios - kl)),
        undesirable_weight * torch.sigmoid(-beta * (kl - logratios)),
    )
    loss = example_mean(losses, weights)
    with torch.no_grad():
        rewards = beta * logratios
        # Masked means, not `rewards[desirable]`: whether a side is present is only known on the device.
        chosen = masked_mean(rewards, desirable.float())
        rejected = masked_mean(rewards, (~desirable).float())
        metrics = {"loss": loss.detach(), "kl": kl, "reward_chosen": chosen, "reward_rejected": rejected}
        metrics["reward_margin"] = chosen - rejected
    return loss, metrics
