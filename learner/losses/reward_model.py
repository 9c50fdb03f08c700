"""The Bradley-Terry reward-model loss (InstructGPT, Ouyang et al. 2022, eq. 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from learner.losses.common import Metrics


def reward_model_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    *,
    margin: torch.Tensor | None = None,
    center_coefficient: float = 0.0,
) -> tuple[torch.Tensor, Metrics]:
    """Pairwise Bradley-Terry loss on scalar rewards r(x, y) of shape (B,), chosen y_w and rejected y_l:

        L_RM = -E[ log sigma(r(x, y_w) - r(x, y_l) - m) ] + c * E[ (r(x, y_w) + r(x, y_l))^2 ]

    `margin` m (shape (B,), default 0) is Llama 2's preference-strength margin; `center_coefficient`
    c (default 0) is the reward-centering term of Eisenstein et al. (2023), which pins the otherwise
    free offset of r near 0. With m = 0 and c = 0 this is the paper's loss exactly; both extras are
    TRL RewardTrainer's (`margin` column, `center_rewards_coefficient`), with the same definitions.
    """
    difference = chosen_rewards - rejected_rewards
    if margin is not None:
        difference = difference - margin
    loss = -F.logsigmoid(difference).mean()
    if center_coefficient:
        loss = loss + center_coefficient * ((chosen_rewards + rejected_rewards) ** 2).mean()
    with torch.no_grad():
        metrics = {
            "loss": loss.item(),
            "accuracy": (chosen_rewards > rejected_rewards).float().mean().item(),
            "margin": (chosen_rewards - rejected_rewards).mean().item(),
            "mean_reward": torch.cat([chosen_rewards, rejected_rewards]).mean().item(),
        }
    return loss, metrics
