"""Critic-free advantages from the rewards of a group of completions of one prompt: GRPO's and RLOO's.

Layout throughout: `rewards` (B,) holds G = `group_size` consecutive completions per prompt, so rows
[0, G) answer the first prompt, [G, 2G) the second, and so on (TRL's `repeat_interleave` order). One
scalar reward per completion (outcome supervision); the advantage of a completion is given to each of
its tokens, e.g. `advantages[:, None]` against (B, T) log-probs.
"""

from __future__ import annotations

import torch


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(B,) -> (B / G, G), refusing groups with no sibling to compare against."""
    if group_size < 2 or rewards.dim() != 1 or rewards.numel() % group_size:
        shape = tuple(rewards.shape)
        raise ValueError(f"need (B,) rewards in groups of G >= 2, B divisible by G; got {shape}, G={group_size}")
    return rewards.view(-1, group_size)


def _centred(grouped: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """r_i - mean(group) and the group's unbiased std, both computed from r - r_1 (the rewards shifted by the
    group's first): the same in exact arithmetic, but a group of equal rewards gives exactly 0 for both,
    where float32 rounding of a plain mean leaves a residue (seven rewards of 0.7: deviations ~6e-8)."""
    shifted = grouped - grouped[:, :1]
    return shifted - shifted.mean(dim=1, keepdim=True), shifted.std(dim=1, keepdim=True)


@torch.no_grad()
def grpo_advantages(
    rewards: torch.Tensor, *, group_size: int, scale_std: bool = True, eps: float = 1e-4
) -> torch.Tensor:
    """GRPO's group-relative advantages with outcome supervision (Shao et al. 2024, DeepSeekMath,
    arXiv:2402.03300, section 4.1.2), one per completion:

        A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)      scale_std=True (the paper's)
        A_i =  r_i - mean(r_1..r_G)                               scale_std=False (Dr. GRPO, Liu et al. 2025,
                                                                   arXiv:2503.20783: no difficulty bias)

    `rewards` (B,) in groups of G = `group_size` consecutive completions (see the module docstring); returns
    (B,). std is the unbiased (Bessel-corrected, 1/(G-1)) sample std, and eps = 1e-4 is added to it rather
    than under a square root: both as TRL 1.16's GRPOTrainer (scale_rewards="group", or "none" for
    scale_std=False). The paper says neither. A group whose rewards are all equal gets advantages of exactly
    0 (no NaN); see `_centred` for how, which is our only numerical departure from TRL. Not supported, unlike
    TRL: NaN rewards for unscorable completions, and scale_rewards="batch" (one std over the whole batch).
    Advantages of each group sum to 0.
    """
    centred, std = _centred(_grouped(rewards, group_size))
    return (centred / (std + eps) if scale_std else centred).flatten()


@torch.no_grad()
def rloo_advantages(rewards: torch.Tensor, *, group_size: int) -> torch.Tensor:
    """REINFORCE leave-one-out advantages (Kool et al. 2019; Ahmadian et al. 2024, arXiv:2402.14740):
    each completion's baseline is the mean reward of its k - 1 siblings,

        A_i = r_i - 1/(k-1) sum_{j != i} r_j  =  k/(k-1) (r_i - mean(r_1..r_k))

    computed by the right-hand side (exactly 0 for a group of equal rewards). `rewards` (B,) in groups of
    k = `group_size` consecutive completions, KL penalty already included if any (RLOO, like RLHF-PPO,
    penalises the reward: r = score - beta sum_t k1_t, see `ppo.per_token_kl`); returns (B,). As TRL 1.16's
    RLOOTrainer with normalize_advantages=False (its default); with k = 1 there is no baseline and we refuse
    (TRL returns 0). Advantages of each group sum to 0. TRL's RLOO loss then takes one probability ratio per
    sequence; for one per token, pass these to `grpo.grpo_loss` with kl_coef=0.
    """
    centred, _ = _centred(_grouped(rewards, group_size))
    return (group_size / (group_size - 1) * centred).flatten()
