"""Alignment losses as pure functions of tensors.

Conventions: `token_logps` are log pi_theta(y_t | x, y_<t) of the target tokens, shape (B, T);
`loss_mask` (or `mask`) is 1.0 on the tokens a loss may count (response tokens, never the prompt or
padding), shape (B, T); sequence log-probs are those summed over the response tokens, shape (B,).
Each loss returns `(loss, metrics)` where metrics are detached 0-dim tensors on the loss's device
(`common.Metrics`): the training loops sum them there and read a step's together (`read_metrics`). Each
docstring gives the paper's equation and says where and why we depart from it or from TRL, against
whose implementation tests/learner/test_losses_trl_parity.py checks every loss; tests/learner/test_losses_rl.py
checks the RL helpers against TRL's arithmetic where TRL 1.16 keeps it inside a trainer, and against former
TRL's where 1.16 has none.

One module per family: `sft`, `reward_model`, `preference` (DPO, IPO, SimPO, ORPO), `kto`, `ppo` (the
clipped surrogate and value loss, GAE, the per-token KL penalty), `grpo` (GRPO's loss and its aggregations).
And what RL around them needs: `advantages` (GRPO's group-relative and RLOO's leave-one-out advantages),
`normalisation` (whitening, running reward moments), `kl_control` (Ziegler et al.'s adaptive KL coefficient).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from learner.losses.advantages import grpo_advantages, rloo_advantages
from learner.losses.common import Metrics, masked_mean, read_metrics
from learner.losses.grpo import LOSS_AGGREGATIONS, aggregate_token_losses, grpo_loss
from learner.losses.kl_control import KLController, update_kl_controller
from learner.losses.kto import kto_loss
from learner.losses.normalisation import RunningMoments, masked_whiten, normalise_rewards, update_running_moments
from learner.losses.ppo import (
    KL_ESTIMATORS,
    AdvantageEstimate,
    clipped_surrogate,
    gae,
    kl_k1,
    kl_k3,
    kl_penalised_rewards,
    per_token_kl,
    ppo_policy_loss,
    ppo_value_loss,
    surrogate_metrics,
)
from learner.losses.preference import PairLogps, dpo_loss, ipo_loss, orpo_loss, simpo_loss
from learner.losses.reward_model import rating_loss, reward_model_loss
from learner.losses.sft import sft_loss

PreferenceLoss = Callable[..., tuple[torch.Tensor, Metrics]]

# The pairwise losses by algorithm name, chosen once at configuration time; each is called as
# `loss_fn(pairs, **hyper_parameters)`, e.g. dpo_loss(pairs, beta=0.1, label_smoothing=0.0).
PREFERENCE_LOSSES: dict[str, PreferenceLoss] = {
    "dpo": dpo_loss,
    "ipo": ipo_loss,
    "simpo": simpo_loss,
    "orpo": orpo_loss,
}

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "PREFERENCE_LOSSES",
    "AdvantageEstimate",
    "KLController",
    "Metrics",
    "PairLogps",
    "PreferenceLoss",
    "RunningMoments",
    "aggregate_token_losses",
    "clipped_surrogate",
    "dpo_loss",
    "gae",
    "grpo_advantages",
    "grpo_loss",
    "ipo_loss",
    "kl_k1",
    "kl_k3",
    "kl_penalised_rewards",
    "kto_loss",
    "masked_mean",
    "masked_whiten",
    "normalise_rewards",
    "orpo_loss",
    "per_token_kl",
    "ppo_policy_loss",
    "ppo_value_loss",
    "rating_loss",
    "read_metrics",
    "reward_model_loss",
    "rloo_advantages",
    "sft_loss",
    "simpo_loss",
    "surrogate_metrics",
    "update_kl_controller",
    "update_running_moments",
]
