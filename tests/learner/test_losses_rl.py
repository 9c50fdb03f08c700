"""RL's helpers around the losses: GRPO's and RLOO's advantages, whitening, running reward moments, the
KL controller, and GRPO's loss aggregations. Hand-worked numbers, invariants, and parity.

Parity, two kinds. TRL 1.16 computes GRPO's and RLOO's advantages inline in `_generate_and_score_completions`,
a method that generates and scores, which no stand-in `self` can reasonably drive: its arithmetic is copied
below (`trl_*` functions, calling TRL's own `nanstd`), and `test_trl_still_computes_advantages_as_copied`
fails if the installed TRL's source no longer contains the copied lines. TRL 1.16 has no KL controller,
`masked_whiten` or `RunningMoments` (they went with its original PPOTrainer): the references are those of
earlier TRL (trl/core.py's `masked_whiten`, trl/trainer/utils.py's `AdaptiveKLController` and
`RunningMoments`), written out here (`former_trl_*`, `FormerTrl*`); its FixedKLController's update did nothing.
GRPO's loss is checked against GRPOTrainer's own `_compute_loss` in test_losses_trl_parity.py.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.rloo_trainer import RLOOTrainer
from trl.trainer.utils import nanstd

from learner.losses import (
    KLController,
    RunningMoments,
    grpo_advantages,
    grpo_loss,
    masked_whiten,
    normalise_rewards,
    per_token_kl,
    rloo_advantages,
    update_kl_controller,
    update_running_moments,
)

SEEDS = [0, 1, 2]
LN2 = math.log(2)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def random_group_rewards(seed: int, groups: int = 6, group_size: int = 4) -> torch.Tensor:
    """Continuous rewards, plus one group of binary rewards and one of equal rewards (as verifiers give)."""
    generator = torch.Generator().manual_seed(seed)
    rewards = torch.randn(groups, group_size, generator=generator) * 2 + 0.5
    rewards[0] = (torch.rand(group_size, generator=generator) > 0.5).float()
    rewards[1] = 0.7
    return rewards.flatten()


# GRPO's group-relative advantages


def test_grpo_advantages_hand_worked() -> None:
    # Group 1, rewards [0, 0, 0, 3]: mean 3/4, deviations [-3/4, -3/4, -3/4, 9/4];
    # unbiased variance (3 * 9/16 + 81/16) / 3 = 9/4, std 3/2: A = [-1/2, -1/2, -1/2, 3/2] (eps = 1e-4 aside).
    # Group 2, rewards all 2: deviations 0, std 0 -> A = 0.
    rewards = t(0, 0, 0, 3, 2, 2, 2, 2)
    scaled = grpo_advantages(rewards, group_size=4)
    assert torch.allclose(scaled, t(-0.75, -0.75, -0.75, 2.25, 0, 0, 0, 0) / (1.5 + 1e-4), atol=1e-7)
    assert torch.allclose(
        grpo_advantages(rewards, group_size=4, scale_std=False), t(-0.75, -0.75, -0.75, 2.25, 0, 0, 0, 0)
    )


def test_grpo_advantages_of_two_completions_are_plus_and_minus_one_over_root_two() -> None:
    # G = 2: deviations +-d/2 and unbiased std |d| / sqrt(2), whatever the rewards: A = +-1/sqrt(2).
    advantages = grpo_advantages(t(1.0, 5.0, -3.0, -2.5), group_size=2, eps=0.0)
    assert torch.allclose(advantages, t(-1, 1, -1, 1) / math.sqrt(2), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scale_std", [True, False])
def test_grpo_advantages_sum_to_zero_in_each_group(seed: int, scale_std: bool) -> None:
    advantages = grpo_advantages(random_group_rewards(seed), group_size=4, scale_std=scale_std)
    assert torch.allclose(advantages.view(-1, 4).sum(-1), torch.zeros(6), atol=1e-5)


@pytest.mark.parametrize("group_size", [2, 3, 7, 16])
@pytest.mark.parametrize("reward", [0.0, 0.1, 1 / 3, 0.7, -2.3, 1e6 + 0.1])
def test_a_group_of_equal_rewards_gets_exactly_zero_advantages(group_size: int, reward: float) -> None:
    # A plain float32 mean of seven 0.7s is off by ~6e-8, which (std + 1e-4) would blow up to ~6e-4.
    rewards = torch.full((2 * group_size,), reward)
    rewards[group_size:] = torch.arange(group_size)  # a second, varied group alongside
    for scale_std in (True, False):
        advantages = grpo_advantages(rewards, group_size=group_size, scale_std=scale_std)
        assert torch.isfinite(advantages).all()
        assert torch.equal(advantages[:group_size], torch.zeros(group_size))
    assert torch.equal(rloo_advantages(rewards, group_size=group_size)[:group_size], torch.zeros(group_size))


def test_grpo_advantages_with_std_scaling_ignore_the_rewards_scale_and_offset() -> None:
    rewards = torch.randn(16, generator=torch.Generator().manual_seed(3))  # (no group of equal rewards: eps = 0)
    affine = grpo_advantages(10 * rewards - 4, group_size=4, eps=0.0)
    assert torch.allclose(affine, grpo_advantages(rewards, group_size=4, eps=0.0), atol=1e-5)


@pytest.mark.parametrize("advantages_of", [grpo_advantages, rloo_advantages])
def test_group_advantages_refuse_a_batch_that_is_not_whole_groups(advantages_of: Callable[..., Any]) -> None:
    with pytest.raises(ValueError):
        advantages_of(torch.zeros(6), group_size=4)
    with pytest.raises(ValueError):
        advantages_of(torch.zeros(6), group_size=1)
    with pytest.raises(ValueError):
        advantages_of(torch.zeros(2, 4), group_size=4)


# RLOO's leave-one-out advantages


def test_rloo_advantages_hand_worked() -> None:
    # Rewards [0, 0, 0, 3]: each zero's siblings average (0 + 0 + 3) / 3 = 1 -> A = -1; the 3's average 0 -> A = 3.
    # Rewards [1, 2]: A = [1 - 2, 2 - 1].
    assert torch.allclose(rloo_advantages(t(0, 0, 0, 3), group_size=4), t(-1, -1, -1, 3))
    assert torch.allclose(rloo_advantages(t(1, 2), group_size=2), t(-1, 1))


@pytest.mark.parametrize("seed", SEEDS)
def test_rloo_advantages_are_the_reward_minus_the_mean_of_the_others(seed: int) -> None:
    rewards = random_group_rewards(seed, group_size=5)
    expected = torch.zeros_like(rewards)
    for i in range(len(rewards)):
        group = range(i - i % 5, i - i % 5 + 5)
        expected[i] = rewards[i] - sum(rewards[j].item() for j in group if j != i) / 4
    advantages = rloo_advantages(rewards, group_size=5)
    assert torch.allclose(advantages, expected, atol=1e-5)
    assert torch.allclose(advantages.view(-1, 5).sum(-1), torch.zeros(6), atol=1e-5)


# Parity with TRL 1.16: its advantage arithmetic, copied from GRPOTrainer / RLOOTrainer._generate_and_score_completions


def trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """multi_objective_aggregation="sum_then_normalize", scale_rewards "group" or "none", every reward scorable."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
    std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_rloo_advantages(
    rewards: torch.Tensor,
    old_per_token_logps: torch.Tensor,
    ref_per_token_logps: torch.Tensor,
    completion_mask: torch.Tensor,
    beta: float,
    num_generations: int,
) -> torch.Tensor:
    """normalize_advantages=False (the default), no reward clipping, every reward scorable, one process."""
    per_token_kl = old_per_token_logps - ref_per_token_logps
    kl = (per_token_kl * completion_mask).sum(-1)
    rewards = rewards - beta * kl
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
    baselines = baselines.view(-1)
    advantages = rewards - baselines
    return torch.nan_to_num(advantages, nan=0.0)


def test_trl_still_computes_advantages_as_copied() -> None:
    copied = {
        GRPOTrainer: [
            "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
            "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
            "advantages = rewards - mean_grouped_rewards",
            "advantages = advantages / (std_rewards + 1e-4)",
        ],
        RLOOTrainer: [
            "per_token_kl = old_per_token_logps - ref_per_token_logps",
            "kl = (per_token_kl * completion_mask).sum(-1)",
            "rewards = rewards - self.beta * kl",
            "baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)",
            "advantages = rewards - baselines",
        ],
    }
    for trainer, lines in copied.items():
        source = inspect.getsource(trainer._generate_and_score_completions)
        assert [line for line in lines if line not in source] == [], trainer.__name__


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("scale_std", "scale_rewards"), [(True, "group"), (False, "none")])
def test_grpo_advantages_match_trl_grpo_trainer(seed: int, scale_std: bool, scale_rewards: str) -> None:
    rewards = random_group_rewards(seed)
    ours = grpo_advantages(rewards, group_size=4, scale_std=scale_std)
    theirs = trl_grpo_advantages(rewards, 4, scale_rewards)
    assert (ours - theirs).abs().max().item() <= 1e-6


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.0, 0.05])
def test_rloo_advantages_with_a_k1_penalty_in_the_reward_match_trl_rloo_trainer(seed: int, beta: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores = random_group_rewards(seed)
    old_logps = torch.rand(24, 10, generator=generator).clamp(min=1e-3).log()
    reference_logps = old_logps + 0.3 * torch.randn(24, 10, generator=generator)
    mask = (torch.arange(10) < torch.randint(1, 11, (24, 1), generator=generator)).float()
    kl, _ = per_token_kl(old_logps, reference_logps, mask, estimator="k1")
    ours = rloo_advantages(scores - beta * kl.sum(-1), group_size=4)
    theirs = trl_rloo_advantages(scores, old_logps, reference_logps, mask, beta, 4)
    assert (ours - theirs).abs().max().item() <= 1e-6


# Whitening


def test_masked_whiten_hand_worked() -> None:
    # Marked values [1, 2, 3]: mean 2, unbiased variance (1 + 0 + 1) / 2 = 1 -> [-1, 0, 1]; the padding's 100 -> 0.
    values, mask = t(1, 2, 3, 100).view(1, 4), t(1, 1, 1, 0).view(1, 4)
    assert torch.allclose(masked_whiten(values, mask), t(-1, 0, 1, 0).view(1, 4), atol=1e-6)
    assert torch.allclose(masked_whiten(values, mask, shift_mean=False), t(1, 2, 3, 0).view(1, 4), atol=1e-6)
    # Doubled spread, same mean: shift_mean=False keeps the mean 2 and halves the deviations.
    doubled = t(0, 2, 4, 100).view(1, 4)
    assert torch.allclose(masked_whiten(doubled, mask, shift_mean=False), t(1, 2, 3, 0).view(1, 4), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_whitened_values_have_mean_zero_and_std_one_on_the_mask(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(8, 12, generator=generator) * 5 + 3
    mask = (torch.rand(8, 12, generator=generator) > 0.3).float()
    whitened = masked_whiten(values, mask)
    marked = whitened[mask.bool()]
    assert marked.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert marked.std().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.equal(whitened[~mask.bool()], torch.zeros(int((1 - mask).sum().item())))
    kept = masked_whiten(values, mask, shift_mean=False)[mask.bool()]
    assert kept.mean().item() == pytest.approx(values[mask.bool()].mean().item(), abs=1e-5)


def test_masked_whiten_refuses_fewer_than_two_values() -> None:
    with pytest.raises(ValueError):
        masked_whiten(t(1, 2).view(1, 2), t(1, 0).view(1, 2))


def former_trl_masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool) -> torch.Tensor:
    """trl/core.py's masked_mean, masked_var (unbiased=True) and masked_whiten."""
    mean = (values * mask).sum() / mask.sum()
    variance = ((values - mean) ** 2 * mask).sum() / mask.sum()
    variance = variance * (mask.sum() / (mask.sum() - 1))
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    if not shift_mean:
        whitened += mean
    return whitened


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_matches_former_trl_on_the_mask(seed: int, shift_mean: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(8, 12, generator=generator) * 3 - 1
    mask = (torch.arange(12) < torch.randint(1, 13, (8, 1), generator=generator)).float()
    ours = masked_whiten(values, mask, shift_mean=shift_mean)
    theirs = former_trl_masked_whiten(values, mask, shift_mean)
    assert ((ours - theirs) * mask).abs().max().item() <= 1e-6


# Running moments of rewards


def test_running_moments_hand_worked() -> None:
    # [1, 3]: n 2, mean 2, M2 1 + 1 = 2.  Then [5]: delta 3, n 3, mean 2 + 3/3 = 3,
    # M2 = 2 + 0 + 9 * 2 * 1 / 3 = 8 (that of [1, 3, 5]: 4 + 0 + 4); std sqrt(8 / 2) = 2.
    first = update_running_moments(RunningMoments(), t(1, 3))
    assert first == RunningMoments(count=2, mean=2.0, sum_squared_deviations=2.0)
    both = update_running_moments(first, t(5))
    assert both == RunningMoments(count=3, mean=3.0, sum_squared_deviations=8.0)
    assert both.std == 2.0
    assert first == RunningMoments(count=2, mean=2.0, sum_squared_deviations=2.0)  # not mutated
    # (5 - 3) / 2 = 1; (1 - 3) / 2 = -1; without the shift 5 / 2.
    assert torch.allclose(normalise_rewards(t(5, 1), both), t(1, -1), atol=1e-6)
    assert torch.allclose(normalise_rewards(t(5), both, shift_mean=False), t(2.5), atol=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_running_moments_of_a_stream_in_batches_are_those_of_the_whole(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    stream = torch.randn(100, generator=generator, dtype=torch.float64) * 4 + 10
    moments = RunningMoments()
    for batch in stream.split([1, 7, 30, 2, 60]):
        moments = update_running_moments(moments, batch)
    assert moments.count == 100
    assert moments.mean == pytest.approx(stream.mean().item(), rel=1e-12)
    assert moments.std == pytest.approx(stream.std().item(), rel=1e-12)
    assert RunningMoments(**dataclasses.asdict(moments)) == moments  # checkpointed as a plain dict


def test_normalising_needs_two_rewards_and_the_std_is_nan_before() -> None:
    one = update_running_moments(RunningMoments(), t(4))
    assert math.isnan(one.std)
    with pytest.raises(ValueError):
        normalise_rewards(t(4), one)


class FormerTrlRunningMoments:
    """trl/trainer/utils.py's RunningMoments, one process (its distributed branch aside)."""

    def __init__(self) -> None:
        self.mean, self.std, self.var, self.count = 0.0, 1.0, 1.0, 1e-24

    @torch.no_grad()
    def update(self, xs: torch.Tensor) -> None:
        xs_count = xs.numel()
        xs_var, xs_mean = torch.var_mean(xs, unbiased=False)
        xs_mean, xs_var = xs_mean.float(), xs_var.float()
        delta = xs_mean - self.mean
        tot_count = self.count + xs_count
        new_sum = xs_var * xs_count
        old_sum = self.var * self.count + delta**2 * self.count * xs_count / tot_count
        tot_sum = old_sum + new_sum
        self.mean += (delta * xs_count / tot_count).item()
        new_var = tot_sum / tot_count
        self.std = (new_var * tot_count / (tot_count - 1)).float().sqrt().item()
        self.var = new_var.item()
        self.count = tot_count


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shift_mean", [True, False])
def test_running_moments_and_normalised_rewards_match_former_trl(seed: int, shift_mean: bool) -> None:
    generator = torch.Generator().manual_seed(seed)
    ours, theirs = RunningMoments(), FormerTrlRunningMoments()
    for size in (8, 3, 16, 5):
        scores = torch.randn(size, generator=generator) * 2 + 1
        ours = update_running_moments(ours, scores)
        theirs.update(scores)
        assert ours.mean == pytest.approx(theirs.mean, rel=1e-5, abs=1e-6)
        assert ours.std == pytest.approx(theirs.std, rel=1e-5)
        # Its PPOTrainer with use_score_scaling (and use_score_norm for the shift), after updating on the batch:
        scaling = theirs.std + torch.finfo(scores.dtype).eps
        expected = (scores - theirs.mean) / scaling if shift_mean else scores / scaling
        normalised = normalise_rewards(scores, ours, shift_mean=shift_mean)
        assert (normalised - expected).abs().max().item() <= 1e-5


# The KL controller


def test_adaptive_kl_controller_hand_worked() -> None:
    # beta 0.1, KL_target 6, H 10,000, 512 rollouts: K_beta = 0.0512.
    controller = KLController(kl_coef=0.1, target=6.0, horizon=10_000)
    step = dict(n_steps=512)
    # KL 6.6: e = 0.1 -> beta 0.1 (1 + 0.00512).       KL 5.4: e = -0.1 -> 0.1 (1 - 0.00512).
    assert update_kl_controller(controller, observed_kl=6.6, **step).kl_coef == pytest.approx(0.100512, rel=1e-12)
    assert update_kl_controller(controller, observed_kl=5.4, **step).kl_coef == pytest.approx(0.099488, rel=1e-12)
    # KL 9: e = 0.5, clipped to 0.2 -> 0.1 (1 + 0.01024).  KL 0: e = -1, clipped to -0.2 -> 0.1 (1 - 0.01024).
    assert update_kl_controller(controller, observed_kl=9.0, **step).kl_coef == pytest.approx(0.101024, rel=1e-12)
    assert update_kl_controller(controller, observed_kl=0.0, **step).kl_coef == pytest.approx(0.098976, rel=1e-12)
    assert update_kl_controller(controller, observed_kl=6.0, **step) == controller


@pytest.mark.parametrize("observed_kl", [0.0, 1.0, 5.9, 6.1, 7.0, 1e6])
def test_adaptive_kl_controller_moves_beta_towards_the_target_by_at_most_20_percent_of_k_beta(
    observed_kl: float,
) -> None:
    controller = KLController(kl_coef=0.2, target=6.0, horizon=1_000)
    updated = update_kl_controller(controller, observed_kl=observed_kl, n_steps=100)  # K_beta = 0.1
    change = updated.kl_coef / controller.kl_coef - 1
    assert (change > 0) == (observed_kl > 6.0)
    assert abs(change) <= 0.2 * 0.1 + 1e-15
    assert abs(change) == pytest.approx(min(abs(observed_kl / 6.0 - 1), 0.2) * 0.1, rel=1e-12)


def test_kl_controller_is_a_frozen_record_that_a_fixed_one_never_changes() -> None:
    fixed = KLController(kl_coef=0.05)
    assert update_kl_controller(fixed, observed_kl=100.0, n_steps=512) is fixed
    adaptive = KLController(kl_coef=0.05, target=6.0)
    updated = update_kl_controller(adaptive, observed_kl=100.0, n_steps=512)
    assert adaptive.kl_coef == 0.05 and updated.kl_coef > 0.05
    with pytest.raises(dataclasses.FrozenInstanceError):
        adaptive.kl_coef = 1.0  # type: ignore[misc]
    assert KLController(**dataclasses.asdict(updated)) == updated
    for bad in (dict(kl_coef=-0.1), dict(kl_coef=0.1, target=0.0), dict(kl_coef=0.1, target=6.0, horizon=0)):
        with pytest.raises(ValueError):
            KLController(**bad)  # type: ignore[arg-type]


class FormerTrlAdaptiveKLController:
    """trl/trainer/utils.py's AdaptiveKLController (after lm-human-preferences' train_policy.py)."""

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        target = self.target
        proportional_error = np.clip(current / target - 1, -0.2, 0.2)
        mult = 1 + proportional_error * n_steps / self.horizon
        self.value *= mult


@pytest.mark.parametrize("seed", SEEDS)
def test_adaptive_kl_controller_matches_former_trl_over_many_steps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ours = KLController(kl_coef=0.2, target=6.0, horizon=10_000)
    theirs = FormerTrlAdaptiveKLController(0.2, 6.0, 10_000)
    for _ in range(200):
        observed_kl, n_steps = float(rng.exponential(6.0)), int(rng.integers(1, 1024))
        ours = update_kl_controller(ours, observed_kl=observed_kl, n_steps=n_steps)
        theirs.update(observed_kl, n_steps)
        assert ours.kl_coef == pytest.approx(float(theirs.value), rel=1e-12)


# GRPO's loss: its aggregations (parity with TRL's GRPOTrainer._compute_loss is in test_losses_trl_parity.py)


def test_grpo_loss_aggregations_hand_worked() -> None:
    # On-policy (rho = 1, no clipping): per-token loss -A. Row 1: A = +1 on 3 tokens; row 2: A = -1 on 1 token,
    # where pi_ref / pi = 2 gives k3 = 2 - 1 - ln 2 = 1 - ln 2, times beta 0.1.
    logps = t(-1.0, -1.0, -1.0, 0.0, math.log(0.25), 0.0, 0.0, 0.0).view(2, 4)
    reference = logps + t(0, 0, 0, 0, LN2, 0, 0, 0).view(2, 4)
    mask = t(1, 1, 1, 0, 1, 0, 0, 0).view(2, 4)
    advantages = t(1.0, -1.0)
    row_2 = 1 + 0.1 * (1 - LN2)
    expected = {
        "sequence_mean": (-1 + row_2) / 2,  # mean of the row means -1 and row_2
        "token_mean": (-3 + row_2) / 4,  # 4 tokens
        "fixed_length": (-3 + row_2) / (2 * 8),  # B = 2 rows, max_length 8
    }
    for aggregation, value in expected.items():
        loss, metrics = grpo_loss(
            logps,
            logps,
            reference,
            advantages,
            mask,
            clip_ratio=0.2,
            kl_coef=0.1,
            aggregation=aggregation,
            max_length=8,
        )
        assert loss.item() == pytest.approx(value, abs=1e-6), aggregation
        assert metrics["kl"] == pytest.approx((1 - LN2) / 4, abs=1e-6)
        assert metrics["clip_fraction"] == 0.0


def test_grpo_loss_refuses_what_it_cannot_compute() -> None:
    logps, mask, advantages = torch.zeros(2, 3), torch.ones(2, 3), t(1.0, -1.0)
    with pytest.raises(ValueError, match="max_length"):
        grpo_loss(logps, logps, logps, advantages, mask, clip_ratio=0.2, kl_coef=0.0, aggregation="fixed_length")
    with pytest.raises(ValueError, match="aggregation"):
        grpo_loss(logps, logps, logps, advantages, mask, clip_ratio=0.2, kl_coef=0.0, aggregation="sum")
    with pytest.raises(ValueError, match="reference"):
        grpo_loss(logps, logps, None, advantages, mask, clip_ratio=0.2, kl_coef=0.1)
    loss, metrics = grpo_loss(logps, logps, None, advantages, mask, clip_ratio=0.2, kl_coef=0.0)
    assert loss.item() == 0.0 and "kl" not in metrics
