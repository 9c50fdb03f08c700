"""PPO's pieces for RLHF: the clipped policy surrogate, the clipped value loss, GAE, and the per-token KL penalty.

Token-level throughout: each response token is an action, tensors are (B, T) over target positions with
`mask` 1.0 on response tokens (never prompt or padding), and means are token means over the whole batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from learner.losses.common import Metrics, masked_mean


def clipped_surrogate(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, *, clip_ratio: float
) -> torch.Tensor:
    """PPO's per-token clipped surrogate, negated: -min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t), (B, T).

    rho_t = exp(log pi_theta - log pi_old); `old_logps` and `advantages` are detached here. `advantages`
    is (B, T), or (B, 1) for one advantage per sequence (GRPO, RLOO). Unmasked: the caller aggregates.
    """
    ratio = torch.exp(logps - old_logps.detach())
    advantages = advantages.detach()
    return -torch.min(ratio * advantages, ratio.clamp(1 - clip_ratio, 1 + clip_ratio) * advantages)


@torch.no_grad()
def surrogate_metrics(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *, clip_ratio: float
) -> Metrics:
    """clip_fraction, the share of tokens whose gradient the clip removes; approx_kl, the token mean of
    (rho - 1) - log rho, the k3 estimate of KL(pi_old || pi_theta)."""
    log_ratio = logps - old_logps
    ratio = torch.exp(log_ratio)
    clipped = ((ratio < 1 - clip_ratio) & (advantages < 0)) | ((ratio > 1 + clip_ratio) & (advantages > 0))
    return {
        "clip_fraction": masked_mean(clipped.float(), mask),
        "approx_kl": masked_mean(ratio - 1 - log_ratio, mask),
    }


def ppo_policy_loss(
    logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, *, clip_ratio: float
) -> tuple[torch.Tensor, Metrics]:
    """PPO's clipped surrogate (Schulman et al. 2017, arXiv:1707.06347, eq. 7), as a loss to minimise:

        rho_t = exp(log pi_theta(a_t|s_t) - log pi_old(a_t|s_t))
        L_CLIP = - sum_t m_t min(rho_t A_t, clip(rho_t, 1 - eps, 1 + eps) A_t) / sum_t m_t

    Shapes (B, T): `logps` under the policy being trained (with gradient), `old_logps` under the policy
    that sampled the tokens, `advantages` A_t (e.g. from `gae`); both of the latter are detached here.
    eps = `clip_ratio`. A token mean over the batch (TRL GRPOTrainer's loss_type="bnpo"), not a mean of
    per-sequence means. No KL or entropy term here: RLHF-PPO puts `per_token_kl` into the rewards
    (`kl_penalised_rewards`); GRPO adds it to the loss (`grpo.grpo_loss`).
    Metrics: loss, and `surrogate_metrics`' clip_fraction and approx_kl.
    """
    loss = masked_mean(clipped_surrogate(logps, old_logps, advantages, clip_ratio=clip_ratio), mask)
    metrics = surrogate_metrics(logps, old_logps, advantages, mask, clip_ratio=clip_ratio)
    return loss, {"loss": loss.detach()} | metrics


def ppo_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *, clip_range: float
) -> tuple[torch.Tensor, Metrics]:
    """The clipped value loss of OpenAI baselines' PPO2 (not in the PPO paper, which uses plain squared error):

        V_clip_t = V_old_t + clip(V_t - V_old_t, -eps_v, eps_v)
        L_V = 1/2 sum_t m_t max((V_t - R_t)^2, (V_clip_t - R_t)^2) / sum_t m_t

    Shapes (B, T): `values` V_t from the value head being trained, `old_values` from the rollout,
    `returns` R_t the targets (from `gae`); the latter two are detached here. eps_v = `clip_range`, in
    the reward's units. The 1/2 is PPO2's (and TRL's former PPOTrainer's); the value coefficient is the
    caller's. Metrics: clip_fraction, the share of tokens where the clipped error is the larger one.
    """
    old_values, returns = old_values.detach(), returns.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(unclipped_error, clipped_error), mask)
    with torch.no_grad():
        metrics = {
            "loss": loss.detach(),
            "clip_fraction": masked_mean((clipped_error > unclipped_error).float(), mask),
        }
    return loss, metrics


@dataclass(frozen=True)
class AdvantageEstimate:
    advantages: torch.Tensor  # (B, T), 0 outside the mask
    returns: torch.Tensor  # (B, T) value targets advantages + values, 0 outside the mask


@torch.no_grad()
def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float, lam: float
) -> AdvantageEstimate:
    """Generalized Advantage Estimation (Schulman et al. 2015, arXiv:1506.02438), per token:

        delta_t = r_t + gamma m_{t+1} V_{t+1} - V_t
        A_t = delta_t + gamma lam m_{t+1} A_{t+1}
        R_t = A_t + V_t                                  (the lambda-return, the value target)

    Shapes (B, T): per-token `rewards` r_t (e.g. `kl_penalised_rewards`), `values` V_t from the rollout,
    `mask` 1.0 on one contiguous span of response tokens per row. The episode ends at the last response
    token: nothing is bootstrapped past it (m_{t+1} = 0). No gradient; advantages are not whitened here.
    """
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    next_mask = torch.zeros_like(mask[:, 0])
    advantages = torch.zeros_like(values)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_mask * next_value - values[:, t]
        advantages[:, t] = delta + gamma * lam * next_mask * next_advantage
        next_value, next_advantage, next_mask = values[:, t], advantages[:, t], mask[:, t]
    advantages = advantages * mask
    return AdvantageEstimate(advantages, (advantages + values) * mask)


def kl_k1(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """k1 = log pi(y_t) - log pi_ref(y_t): unbiased for KL(pi || pi_ref) with y ~ pi, but negative for some tokens."""
    return logps - reference_logps


def kl_k3(logps: torch.Tensor, reference_logps: torch.Tensor) -> torch.Tensor:
    """k3 = pi_ref/pi - 1 - log(pi_ref/pi): unbiased, never negative, lower variance (Schulman 2020; TRL's GRPO)."""
    log_ratio = reference_logps - logps
    return torch.exp(log_ratio) - log_ratio - 1


KL_ESTIMATORS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"k1": kl_k1, "k3": kl_k3}


def per_token_kl(
    logps: torch.Tensor, reference_logps: torch.Tensor, mask: torch.Tensor, *, estimator: str = "k1"
) -> tuple[torch.Tensor, Metrics]:
    """Per-token estimate of KL(pi_theta || pi_ref) on sampled tokens, 0 outside the mask; shapes (B, T).

    k1 (the default) is the estimator of InstructGPT-style RLHF-PPO, whose penalty -beta k1_t goes into
    the rewards; k3 is the one GRPO adds to its loss. The reference is detached; whether the policy side
    carries gradient is the caller's choice (detach it for rewards). Metrics: kl_per_token, the token
    mean, and kl_per_sequence, the mean over rows of the per-row sum (the KL of whole responses).
    """
    kl = KL_ESTIMATORS[estimator](logps, reference_logps.detach()) * mask
    with torch.no_grad():
        metrics = {
            "kl_per_token": masked_mean(kl, mask).detach(),
            "kl_per_sequence": kl.sum(-1).mean().detach(),
        }
    return kl, metrics


def kl_penalised_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, *, kl_coef: float) -> torch.Tensor:
    """Per-token RLHF rewards (Ouyang et al. 2022; Ziegler et al. 2019): r_t = -beta KL_t, plus the
    sequence's reward-model score at its last response token.

    `scores` (B,), `kl` and `mask` (B, T); `kl_coef` is beta. Returns (B, T), 0 outside the mask.
    """
    last_token = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & mask.bool()
    return (-kl_coef * kl + scores.unsqueeze(-1) * last_token) * mask
