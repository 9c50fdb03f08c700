"""The Bradley-Terry reward-model loss (InstructGPT, Ouyang et al. 2022, eq. 1), on pairs and on ratings."""

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
            "loss": loss.detach(),
            "accuracy": (chosen_rewards > rejected_rewards).float().mean(),
            "margin": (chosen_rewards - rejected_rewards).mean(),
            "mean_reward": torch.cat([chosen_rewards, rejected_rewards]).mean(),
        }
    return loss, metrics


def rating_loss(rewards: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, Metrics]:
    """A rating as a Bradley-Terry comparison with a reference answer of reward 0, on rewards r(x, y)
    and targets p in [0, 1] of shape (B,):

        L_rating = -E[ p log sigma(r(x, y)) + (1 - p) log sigma(-r(x, y)) ]

    where p = (rating - 1) / (max_rating - 1) is read as P(y beats the reference): the Bradley-Terry
    likelihood of eq. 1 with a soft outcome. It is the cross-entropy of a pointwise logistic model; its
    minimum in r is logit(p), so a rating-only model is calibrated on the same log-odds scale that pairs
    train, and its offset, free under pairs alone, is pinned to the reference (rating 3 of 5 at r = 0).
    """
    loss = -(targets * F.logsigmoid(rewards) + (1 - targets) * F.logsigmoid(-rewards)).mean()
    with torch.no_grad():
        metrics = {
            "loss": loss.detach(),
            # Whether r and the rating agree on which side of the reference the answer falls (p = 1/2: either).
            "accuracy": ((rewards > 0) == (targets > 0.5)).float().mean(),
            "mean_reward": rewards.mean(),
        }
    return loss, metrics
