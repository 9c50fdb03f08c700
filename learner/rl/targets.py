"""From a step's scored rollouts to what the update trains toward, per algorithm (the maths is
`learner.losses`'; this is which pieces each algorithm takes, on tensors of the whole step's batch):

- GRPO: A_i = the group-relative advantage of answer i's score (std-scaled or not); the KL (k3) is a
  term of the loss, not of the reward.
- RLOO: r_i = score_i - beta KL_i (k1 summed over the answer, in the reward, as TRL's RLOO), then
  A_i = r_i minus the mean of the other answers to its prompt.
- PPO: per-token rewards -beta KL_t plus the score at the last token; the critic's values; GAE advantages
  (whitened over the step's tokens) and lambda-returns as the value targets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from learner.losses import (
    gae,
    grpo_advantages,
    kl_penalised_rewards,
    masked_mean,
    masked_whiten,
    per_token_kl,
    rloo_advantages,
)
from trimtab.config.rl import RLConfig


@dataclass(frozen=True)
class Measured:
    """The step's batch under the models before the update, (B, L-1) each."""

    old_logps: torch.Tensor  # the actor's (as the engine should have sampled: the drift is the difference)
    reference_logps: torch.Tensor  # the reference's
    old_values: torch.Tensor | None  # the critic's (PPO)


@dataclass(frozen=True)
class Targets:
    advantages: torch.Tensor  # (B,) one per answer (GRPO, RLOO), or (B, L-1) per token (PPO)
    returns: torch.Tensor | None = None  # PPO's value targets, (B, L-1)


def targets(
    algorithm: str, scores: torch.Tensor, measured: Measured, mask: torch.Tensor, rl: RLConfig, kl_coef: float
) -> tuple[Targets, dict[str, float]]:
    """The step's targets and what they say (rewards after the KL penalty, advantages)."""
    group = rl.rollout.group_size
    if algorithm == "grpo":
        advantages = grpo_advantages(scores, group_size=group, scale_std=rl.grpo.scale_std)
        return Targets(advantages), {"advantage_abs_mean": advantages.abs().mean().item()}
    token_kl, _ = per_token_kl(measured.old_logps, measured.reference_logps, mask, estimator=rl.kl.estimator)
    if algorithm == "rloo":
        rewards = scores - kl_coef * token_kl.sum(-1)
        advantages = rloo_advantages(rewards, group_size=group)
        return Targets(advantages), {"reward_penalised": rewards.mean().item()}
    if algorithm == "ppo":
        assert measured.old_values is not None
        rewards = kl_penalised_rewards(scores, token_kl, mask, kl_coef=kl_coef)
        estimate = gae(rewards, measured.old_values, mask, gamma=rl.ppo.gamma, lam=rl.ppo.lam)
        advantages = masked_whiten(estimate.advantages, mask) if rl.ppo.whiten_advantages else estimate.advantages
        metrics = {
            "reward_penalised": rewards.sum(-1).mean().item(),
            "value_mean": masked_mean(measured.old_values, mask).item(),
            "return_mean": masked_mean(estimate.returns, mask).item(),
        }
        return Targets(advantages, estimate.returns), metrics
    raise ValueError(f"unknown RL algorithm {algorithm!r}")
