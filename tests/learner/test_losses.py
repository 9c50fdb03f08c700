"""The alignment losses, specified by hand-worked numbers and by invariants.

Parity with TRL's implementations on random batches is in test_losses_trl_parity.py. Throughout,
sigma(ln 3) = 3/4, so -log sigma(ln 3) = ln(4/3) and -log sigma(-ln 3) = ln 4; sigma(0) = 1/2.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from learner.losses import (
    PREFERENCE_LOSSES,
    PairLogps,
    dpo_loss,
    gae,
    ipo_loss,
    kl_penalised_rewards,
    kto_loss,
    orpo_loss,
    per_token_kl,
    ppo_policy_loss,
    ppo_value_loss,
    rating_loss,
    read_metrics,
    reward_model_loss,
    simpo_loss,
)

LN2, LN3 = math.log(2), math.log(3)


def t(*values: float) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def pairs(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    reference_chosen: torch.Tensor | None = None,
    reference_rejected: torch.Tensor | None = None,
    chosen_tokens: torch.Tensor | None = None,
    rejected_tokens: torch.Tensor | None = None,
) -> PairLogps:
    ones = torch.ones_like(chosen)
    return PairLogps(
        policy_chosen=chosen,
        policy_rejected=rejected,
        chosen_tokens=ones if chosen_tokens is None else chosen_tokens,
        rejected_tokens=ones if rejected_tokens is None else rejected_tokens,
        reference_chosen=reference_chosen,
        reference_rejected=reference_rejected,
    )


# Reward model (Bradley-Terry)


def test_reward_model_loss_hand_worked() -> None:
    # Pair 1: r_w - r_l = ln 3 -> ln(4/3). Pair 2: equal rewards -> ln 2 (and not counted as correct).
    loss, metrics = reward_model_loss(t(LN3, 1.0), t(0.0, 1.0))
    assert loss.item() == pytest.approx((math.log(4 / 3) + LN2) / 2, abs=1e-6)
    assert metrics["accuracy"] == 0.5
    assert metrics["margin"] == pytest.approx(LN3 / 2, abs=1e-6)
    assert metrics["mean_reward"] == pytest.approx((LN3 + 2.0) / 4, abs=1e-6)


def test_reward_model_margin_is_subtracted_and_centering_adds_the_squared_sum() -> None:
    # Margins [ln 3, 0] bring both differences to 0: ln 2 each. Centering with c = 0.5 adds
    # 0.5 * mean((r_w + r_l)^2) = 0.5 * ((ln 3)^2 + 2^2) / 2.
    loss, _ = reward_model_loss(t(LN3, 1.0), t(0.0, 1.0), margin=t(LN3, 0.0))
    assert loss.item() == pytest.approx(LN2, abs=1e-6)
    loss, _ = reward_model_loss(t(LN3, 1.0), t(0.0, 1.0), margin=t(LN3, 0.0), center_coefficient=0.5)
    assert loss.item() == pytest.approx(LN2 + 0.5 * (LN3**2 + 4.0) / 2, abs=1e-6)


def test_reward_model_loss_ignores_a_common_offset_of_the_rewards() -> None:
    chosen, rejected = t(0.3, -1.2, 2.0), t(0.1, 0.4, -0.5)
    shifted, _ = reward_model_loss(chosen + 7.0, rejected + 7.0)
    assert shifted.item() == pytest.approx(reward_model_loss(chosen, rejected)[0].item(), abs=1e-6)


def test_rating_loss_is_the_cross_entropy_of_beating_a_reward_zero_reference() -> None:
    rewards, targets = t(0.0, LN3, -2.0, 1.5), t(0.5, 1.0, 0.25, 0.0)
    loss, metrics = rating_loss(rewards, targets)
    # Independent: torch's BCE on logits. Hand-worked: r = 0 at p = 1/2 costs ln 2; r = ln 3 at p = 1 costs ln(4/3).
    assert loss.item() == pytest.approx(F.binary_cross_entropy_with_logits(rewards, targets).item(), abs=1e-6)
    assert rating_loss(t(0.0), t(0.5))[0].item() == pytest.approx(LN2, abs=1e-6)
    assert rating_loss(t(LN3), t(1.0))[0].item() == pytest.approx(math.log(4 / 3), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(0.75)  # r = 1.5 sits above the reference, its rating below


def test_rating_loss_is_least_at_the_log_odds_of_the_rating() -> None:
    reward = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.SGD([reward], lr=2.0)
    for _ in range(300):
        optimizer.zero_grad()
        rating_loss(reward, t(0.75))[0].backward()
        optimizer.step()
    assert reward.item() == pytest.approx(math.log(0.75 / 0.25), abs=1e-3)


# DPO


def dpo_example() -> PairLogps:
    # Log-ratios: chosen [ln 3, 0], rejected [-ln 3, 0], so h = [2 ln 3, 0]; with beta = 1/2, beta h = [ln 3, 0].
    return pairs(t(LN3 - 2.0, -1.0), t(-LN3 - 4.0, -6.0), t(-2.0, -1.0), t(-4.0, -6.0))


def test_dpo_loss_hand_worked() -> None:
    loss, metrics = dpo_loss(dpo_example(), beta=0.5)
    assert loss.item() == pytest.approx((math.log(4 / 3) + LN2) / 2, abs=1e-6)
    assert metrics["reward_chosen"] == pytest.approx(0.5 * LN3 / 2, abs=1e-6)  # beta * mean([ln 3, 0])
    assert metrics["reward_rejected"] == pytest.approx(-0.5 * LN3 / 2, abs=1e-6)
    assert metrics["reward_margin"] == pytest.approx(0.5 * LN3, abs=1e-6)
    assert metrics["reward_accuracy"] == 0.5


def test_dpo_label_smoothing_is_conservative_dpo() -> None:
    # eps = 1/4. Pair 1: 3/4 * ln(4/3) + 1/4 * ln 4. Pair 2 (h = 0): ln 2 whatever eps.
    loss, _ = dpo_loss(dpo_example(), beta=0.5, label_smoothing=0.25)
    pair_1 = 0.75 * math.log(4 / 3) + 0.25 * math.log(4)
    assert loss.item() == pytest.approx((pair_1 + LN2) / 2, abs=1e-6)


@pytest.mark.parametrize(("beta", "label_smoothing"), [(0.1, 0.0), (2.0, 0.0), (0.5, 0.3)])
def test_dpo_loss_is_log_2_when_the_policy_equals_the_reference(beta: float, label_smoothing: float) -> None:
    logps = t(-3.0, -7.5, -0.2)
    batch = pairs(logps, logps - 1.0, logps, logps - 1.0)
    loss, metrics = dpo_loss(batch, beta=beta, label_smoothing=label_smoothing)
    assert loss.item() == pytest.approx(LN2, abs=1e-6)
    assert metrics["reward_margin"] == 0.0


def test_dpo_with_half_smoothing_cannot_tell_chosen_from_rejected() -> None:
    batch = dpo_example()
    swapped = pairs(batch.policy_rejected, batch.policy_chosen, batch.reference_rejected, batch.reference_chosen)
    loss, _ = dpo_loss(batch, beta=0.5, label_smoothing=0.5)
    assert loss.item() == pytest.approx(dpo_loss(swapped, beta=0.5, label_smoothing=0.5)[0].item(), abs=1e-6)


def test_dpo_gradient_raises_chosen_lowers_rejected_and_never_reaches_the_reference() -> None:
    chosen, rejected = t(-3.0, -5.0).requires_grad_(), t(-4.0, -2.0).requires_grad_()
    reference_chosen, reference_rejected = t(-3.5, -5.0).requires_grad_(), t(-4.0, -2.5).requires_grad_()
    loss, _ = dpo_loss(pairs(chosen, rejected, reference_chosen, reference_rejected), beta=0.1)
    loss.backward()
    assert chosen.grad is not None and rejected.grad is not None
    assert (chosen.grad < 0).all() and (rejected.grad > 0).all()  # descent raises chosen, lowers rejected
    assert reference_chosen.grad is None and reference_rejected.grad is None


def test_reference_based_losses_refuse_missing_reference_log_probs() -> None:
    with pytest.raises(ValueError, match="reference"):
        dpo_loss(pairs(t(-1.0), t(-2.0)), beta=0.1)
    with pytest.raises(ValueError, match="reference"):
        ipo_loss(pairs(t(-1.0), t(-2.0)), tau=0.1)


# IPO


def test_ipo_loss_hand_worked_with_length_normalisation() -> None:
    # tau = 1/4, target margin 1/(2 tau) = 2. Chosen log-ratios [2, 4] over [2, 4] tokens -> [1, 1] per
    # token; rejected [-1, 2] over [1, 2] tokens -> [-1, 1]; h = [2, 0]; loss = ((2-2)^2 + (0-2)^2) / 2 = 2.
    # (Without normalisation h would be [3, 2] and the loss 0.5.)
    batch = pairs(
        chosen=t(-1.0, 0.0),
        rejected=t(-4.0, -1.0),
        reference_chosen=t(-3.0, -4.0),
        reference_rejected=t(-3.0, -3.0),
        chosen_tokens=t(2.0, 4.0),
        rejected_tokens=t(1.0, 2.0),
    )
    loss, metrics = ipo_loss(batch, tau=0.25)
    assert loss.item() == pytest.approx(2.0, abs=1e-6)
    assert metrics["reward_margin"] == pytest.approx(1.0, abs=1e-6)  # mean h


def test_ipo_loss_is_zero_at_its_target_margin_and_grows_on_either_side() -> None:
    def loss_at(h: float) -> float:
        return ipo_loss(pairs(t(h), t(0.0), t(0.0), t(0.0)), tau=0.5)[0].item()

    assert loss_at(1.0) == pytest.approx(0.0, abs=1e-7)  # 1 / (2 tau) = 1
    assert loss_at(3.0) == pytest.approx(4.0, abs=1e-6)
    assert loss_at(-1.0) == pytest.approx(4.0, abs=1e-6)  # overshooting costs as much as undershooting


# SimPO


def test_simpo_loss_hand_worked() -> None:
    # beta = 2, gamma = 1. Mean log-probs: chosen [-2/2, -6/3] = [-1, -2], rejected [-6/3, -4/1] = [-2, -4];
    # rewards beta * mean: chosen [-2, -4], rejected [-4, -8]; beta-margin minus gamma: [1, 3].
    batch = pairs(t(-2.0, -6.0), t(-6.0, -4.0), chosen_tokens=t(2.0, 3.0), rejected_tokens=t(3.0, 1.0))
    loss, metrics = simpo_loss(batch, beta=2.0, gamma=1.0)
    expected = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(-3.0))) / 2  # -log sigma(x) = log(1 + e^-x)
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["reward_chosen"] == pytest.approx(-3.0, abs=1e-6)
    assert metrics["reward_margin"] == pytest.approx(3.0, abs=1e-6)


def test_simpo_gamma_is_the_margin_at_which_the_loss_is_log_2() -> None:
    batch = pairs(t(-1.0), t(-1.5))  # beta * margin = 2 * 0.5 = 1 = gamma
    assert simpo_loss(batch, beta=2.0, gamma=1.0)[0].item() == pytest.approx(LN2, abs=1e-6)


# ORPO


def test_orpo_loss_hand_worked() -> None:
    # Pair 1: chosen 2 tokens, mean log-prob ln(1/2): P = 1/2, odds 1; rejected 3 tokens, ln(1/4): odds 1/3.
    #   log odds ratio = ln 3, odds-ratio term -log sigma(ln 3) = ln(4/3).
    # Pair 2: chosen 1 token, ln(1/4): odds 1/3; rejected 1 token, ln(1/2): odds 1. Ratio -ln 3 -> ln 4.
    # NLL over the 3 chosen tokens: (2 ln 2 + ln 4) / 3 = 4 ln 2 / 3. lam = 1/2.
    batch = pairs(
        chosen=t(2 * math.log(0.5), math.log(0.25)),
        rejected=t(3 * math.log(0.25), math.log(0.5)),
        chosen_tokens=t(2.0, 1.0),
        rejected_tokens=t(3.0, 1.0),
    )
    loss, metrics = orpo_loss(batch, lam=0.5)
    odds_ratio_term = (math.log(4 / 3) + math.log(4)) / 2
    assert metrics["nll"] == pytest.approx(4 * LN2 / 3, abs=1e-6)
    assert metrics["odds_ratio_loss"] == pytest.approx(odds_ratio_term, abs=1e-6)
    assert metrics["log_odds_ratio"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["reward_accuracy"] == 0.5
    assert loss.item() == pytest.approx(4 * LN2 / 3 + 0.5 * odds_ratio_term, abs=1e-6)


def test_orpo_log_odds_stay_finite_for_near_certain_responses() -> None:
    # Mean log-probs of -1e-6 (P ~ 1, log odds ~ 13.8) must not give inf or nan through log(1 - P).
    loss, metrics = orpo_loss(pairs(t(-1e-6), t(-2.0)), lam=0.1)
    assert math.isfinite(loss.item()) and metrics["log_odds_ratio"] > 10


def test_reference_free_losses_need_no_reference_and_all_share_one_calling_convention() -> None:
    batch = pairs(t(-3.0, -2.0), t(-4.0, -2.5), t(-3.2, -2.0), t(-4.0, -2.4), t(3.0, 2.0), t(4.0, 5.0))
    without_reference = pairs(t(-3.0, -2.0), t(-4.0, -2.5), chosen_tokens=t(3.0, 2.0), rejected_tokens=t(4.0, 5.0))
    hyper_parameters = {"dpo": {"beta": 0.1}, "ipo": {"tau": 0.1}, "simpo": {"beta": 2.0, "gamma": 0.5}}
    hyper_parameters["orpo"] = {"lam": 0.1}
    assert set(PREFERENCE_LOSSES) == set(hyper_parameters)
    for name, loss_fn in PREFERENCE_LOSSES.items():
        loss, metrics = loss_fn(batch, **hyper_parameters[name])
        assert loss.ndim == 0 and metrics["loss"] == pytest.approx(loss.item())
        if name in ("simpo", "orpo"):
            assert loss_fn(without_reference, **hyper_parameters[name])[0].item() == loss.item()


def test_pair_logps_from_a_stacked_batch_of_chosen_then_rejected() -> None:
    token_logps = t(-1.0, -2.0, -9.0, -3.0, -9.0, -9.0, -4.0, -5.0, -6.0, -7.0, -8.0, -9.0).view(4, 3)
    loss_mask = t(1, 1, 0, 1, 0, 0, 1, 1, 1, 1, 1, 0).view(4, 3)
    batch = PairLogps.from_token_logps(token_logps, loss_mask, reference_logps=t(-1.5, -2.5, -3.5, -4.5))
    assert batch.policy_chosen.tolist() == [-3.0, -3.0]
    assert batch.policy_rejected.tolist() == [-15.0, -15.0]
    assert batch.chosen_tokens.tolist() == [2.0, 1.0]
    assert batch.rejected_tokens.tolist() == [3.0, 2.0]
    assert batch.reference_chosen is not None and batch.reference_chosen.tolist() == [-1.5, -2.5]
    assert batch.reference_rejected is not None and batch.reference_rejected.tolist() == [-3.5, -4.5]


# KTO


def test_kto_loss_hand_worked() -> None:
    # Mismatched log-ratios [1, 0]: z_0 = 1/2. beta = 1, lambda_D = 1, lambda_U = 2.
    # Desirable, r = 1/2 + ln 3:    lambda_D sigma(-(r - z_0)) = 1/4.
    # Undesirable, r = 1/2 - ln 3:  lambda_U sigma(-(z_0 - r)) = 2 * 1/4.
    # Undesirable, r = 1/2:         2 * sigma(0) = 1.          Mean: (1/4 + 1/2 + 1) / 3 = 7/12.
    policy = t(0.5 + LN3 - 3.0, 0.5 - LN3 - 3.0, 0.5 - 3.0)
    reference = t(-3.0, -3.0, -3.0)
    desirable = torch.tensor([True, False, False])
    loss, metrics = kto_loss(
        policy, reference, desirable, t(-1.0, -2.0), t(-2.0, -2.0), beta=1.0, undesirable_weight=2.0
    )
    assert loss.item() == pytest.approx(7 / 12, abs=1e-6)
    assert metrics["kl"] == pytest.approx(0.5, abs=1e-6)
    assert metrics["reward_chosen"] == pytest.approx(0.5 + LN3, abs=1e-6)
    assert metrics["reward_rejected"] == pytest.approx(0.5 - LN3 / 2, abs=1e-6)


def test_kto_reference_point_is_clamped_at_zero() -> None:
    # Mismatched log-ratios average -1: z_0 = max(0, -1) = 0, so a desirable r = ln 3 costs sigma(-ln 3) = 1/4.
    loss, metrics = kto_loss(t(LN3), t(0.0), torch.tensor([True]), t(-3.0), t(-2.0), beta=1.0)
    assert metrics["kl"] == 0.0
    assert loss.item() == pytest.approx(0.25, abs=1e-6)


def test_kto_gradient_reaches_only_the_policy_log_probs_of_the_batch() -> None:
    policy, reference = t(-2.0, -3.0).requires_grad_(), t(-2.5, -2.0).requires_grad_()
    policy_kl, reference_kl = t(-1.0, -4.0).requires_grad_(), t(-2.0, -2.0).requires_grad_()
    loss, _ = kto_loss(policy, reference, torch.tensor([True, False]), policy_kl, reference_kl, beta=0.1)
    loss.backward()
    assert policy.grad is not None and policy.grad[0] < 0 < policy.grad[1]  # raise desirable, lower undesirable
    assert reference.grad is None and policy_kl.grad is None and reference_kl.grad is None


def test_kto_metrics_give_0_for_the_side_a_batch_lacks() -> None:
    # Whether a side is present is known only on the device: deciding which keys to return would wait for it.
    _, metrics = kto_loss(t(-1.0), t(-2.0), torch.tensor([True]), t(-1.0), t(-1.0), beta=0.1)
    assert metrics["reward_chosen"] == pytest.approx(0.1, abs=1e-6)
    assert metrics["reward_rejected"] == 0.0


def test_metrics_stay_on_the_device_and_are_read_together() -> None:
    policy = t(-2.0, -3.0).requires_grad_()
    _, metrics = kto_loss(policy, t(-2.5, -2.0), torch.tensor([True, False]), t(-1.0), t(-2.0), beta=0.1)
    assert all(isinstance(value, torch.Tensor) and value.dim() == 0 for value in metrics.values())
    assert not any(value.requires_grad for value in metrics.values())
    read = read_metrics(metrics)
    assert read.keys() == metrics.keys() and all(isinstance(value, float) for value in read.values())
    assert read["reward_margin"] == pytest.approx(0.1 * 0.5 - 0.1 * -1.0, abs=1e-6)


# PPO


def test_ppo_policy_loss_hand_worked() -> None:
    # eps = 0.2; per token -min(rho A, clip(rho) A):
    #   rho 1.5, A +1 -> -1.2 (clipped)      rho 0.5, A +1 -> -0.5 (pessimistic side, not clipped)
    #   rho 0.5, A -1 -> +0.8 (clipped)      rho 1.5, A -1 -> +1.5 (not clipped)
    # The fifth token is masked. Mean over 4 tokens: 0.6 / 4 = 0.15; 2 of 4 clipped.
    old_logps = t(-1.0, -2.0, -0.5, -3.0, -1.0).view(1, 5)
    ratios = t(1.5, 0.5, 0.5, 1.5, 100.0).view(1, 5)
    advantages = t(1.0, 1.0, -1.0, -1.0, 1.0).view(1, 5)
    mask = t(1, 1, 1, 1, 0).view(1, 5)
    loss, metrics = ppo_policy_loss(old_logps + ratios.log(), old_logps, advantages, mask, clip_ratio=0.2)
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert metrics["clip_fraction"] == 0.5
    # approx_kl: mean of (rho - 1) - ln rho over the 4 tokens = (2 (0.5 - ln 1.5) + 2 (-0.5 + ln 2)) / 4
    assert metrics["approx_kl"] == pytest.approx((math.log(2) - math.log(1.5)) / 2, abs=1e-6)


def test_ppo_policy_gradient_on_policy_is_minus_advantage_over_token_count() -> None:
    # At rho = 1 the clip is inactive and d L / d log pi_t = -m_t A_t / sum(m).
    logps = t(-1.0, -2.0, -0.5, -3.0).view(2, 2).requires_grad_()
    advantages = t(0.5, -1.0, 2.0, 7.0).view(2, 2)
    mask = t(1, 1, 1, 0).view(2, 2)
    loss, _ = ppo_policy_loss(logps, logps.detach(), advantages, mask, clip_ratio=0.2)
    loss.backward()
    assert logps.grad is not None
    assert torch.allclose(logps.grad, -advantages * mask / 3, atol=1e-7)


def test_ppo_value_loss_hand_worked() -> None:
    # eps_v = 0.5:  V_old 0, V 1, R 2: (1-2)^2 = 1 vs clipped V 0.5: (0.5-2)^2 = 2.25 -> 2.25 (clipped larger)
    #               V_old 0, V 1, R 0: 1 vs (0.5-0)^2 = 0.25 -> 1
    #               V_old 1, V 1.2, R 1: inside the clip range -> 0.04.    Loss: 0.5 * 3.29 / 3.
    values, old_values, returns = t(1.0, 1.0, 1.2, 50.0), t(0.0, 0.0, 1.0, 0.0), t(2.0, 0.0, 1.0, 0.0)
    loss, metrics = ppo_value_loss(
        values.view(1, 4), old_values.view(1, 4), returns.view(1, 4), t(1, 1, 1, 0).view(1, 4), clip_range=0.5
    )
    assert loss.item() == pytest.approx(0.5 * 3.29 / 3, abs=1e-6)
    assert metrics["clip_fraction"] == pytest.approx(1 / 3, abs=1e-6)


def test_gae_hand_worked_with_a_prompt_and_padding() -> None:
    # gamma = lam = 1/2. Row 1, three response tokens, rewards [0, 0, 1], values [0.5, 0.6, 0.7]:
    #   t=2: delta = 1 - 0.7 = 0.3                      A = 0.3
    #   t=1: delta = 0 + 0.5*0.7 - 0.6 = -0.25         A = -0.25 + 0.25*0.3 = -0.175
    #   t=0: delta = 0 + 0.5*0.6 - 0.5 = -0.2          A = -0.2 + 0.25*(-0.175) = -0.24375
    # Row 2: a prompt position, two response tokens, then padding (its reward and value must not count):
    #   t=2: delta = 1 - 2 = -1 (no bootstrap)          A = -1
    #   t=1: delta = 0 + 0.5*2 - 1 = 0                  A = 0 + 0.25*(-1) = -0.25
    rewards = t(0.0, 0.0, 1.0, 0.0, 5.0, 0.0, 1.0, 9.0).view(2, 4)
    values = t(0.5, 0.6, 0.7, 0.0, 3.0, 1.0, 2.0, 7.0).view(2, 4)
    mask = t(1, 1, 1, 0, 0, 1, 1, 0).view(2, 4)
    estimate = gae(rewards, values, mask, gamma=0.5, lam=0.5)
    expected = t(-0.24375, -0.175, 0.3, 0.0, 0.0, -0.25, -1.0, 0.0).view(2, 4)
    assert torch.allclose(estimate.advantages, expected, atol=1e-6)
    assert torch.allclose(estimate.returns, (expected + values) * mask, atol=1e-6)


def test_gae_with_gamma_and_lambda_one_gives_the_reward_to_go() -> None:
    rewards = t(0.1, -0.2, 0.3, 1.0).view(1, 4)
    values = t(0.4, 0.9, -0.3, 0.2).view(1, 4)
    estimate = gae(rewards, values, torch.ones(1, 4), gamma=1.0, lam=1.0)
    assert torch.allclose(estimate.returns, t(1.2, 1.1, 1.3, 1.0).view(1, 4), atol=1e-6)


def test_gae_with_lambda_zero_gives_one_step_td_errors() -> None:
    rewards, values = t(0.1, -0.2, 0.3).view(1, 3), t(0.4, 0.9, -0.3).view(1, 3)
    estimate = gae(rewards, values, torch.ones(1, 3), gamma=0.9, lam=0.0)
    td = t(0.1 + 0.9 * 0.9 - 0.4, -0.2 + 0.9 * -0.3 - 0.9, 0.3 + 0.3).view(1, 3)
    assert torch.allclose(estimate.advantages, td, atol=1e-6)


def test_per_token_kl_hand_worked_k1_and_k3() -> None:
    # pi = [1/2, 1/4], pi_ref = [1/4, 1/2]. k1 = ln(pi/pi_ref) = [ln 2, -ln 2].
    # k3 = pi_ref/pi - 1 - ln(pi_ref/pi) = [1/2 - 1 + ln 2, 2 - 1 - ln 2]. The third position is masked.
    logps, reference = t(0.5, 0.25, 0.9).log().view(1, 3), t(0.25, 0.5, 0.1).log().view(1, 3)
    mask = t(1, 1, 0).view(1, 3)
    k1, metrics = per_token_kl(logps, reference, mask)
    assert torch.allclose(k1, t(LN2, -LN2, 0.0).view(1, 3), atol=1e-6)
    assert metrics["kl_per_token"] == pytest.approx(0.0, abs=1e-6)
    k3, metrics = per_token_kl(logps, reference, mask, estimator="k3")
    assert torch.allclose(k3, t(LN2 - 0.5, 1 - LN2, 0.0).view(1, 3), atol=1e-6)
    assert metrics["kl_per_sequence"] == pytest.approx(0.5, abs=1e-6)


def test_k1_and_k3_both_estimate_the_exact_kl_on_sampled_tokens() -> None:
    # Sampling y ~ pi over a 5-token vocabulary, the sample means approach KL(pi || pi_ref).
    generator = torch.Generator().manual_seed(0)
    pi = torch.softmax(torch.randn(5, generator=generator), -1)
    pi_ref = torch.softmax(torch.randn(5, generator=generator), -1)
    exact = (pi * (pi / pi_ref).log()).sum().item()
    tokens = torch.multinomial(pi, 200_000, replacement=True, generator=generator).view(1, -1)
    mask = torch.ones_like(tokens, dtype=torch.float32)
    for estimator in ("k1", "k3"):
        _, metrics = per_token_kl(pi.log()[tokens], pi_ref.log()[tokens], mask, estimator=estimator)
        assert metrics["kl_per_token"] == pytest.approx(exact, abs=0.01)


def test_kl_penalised_rewards_put_the_score_on_the_last_response_token() -> None:
    # A prompt position, two response tokens, padding; beta = 0.5, score 3.
    kl, mask = t(0.7, 0.1, 0.2, 0.3).view(1, 4), t(0, 1, 1, 0).view(1, 4)
    rewards = kl_penalised_rewards(t(3.0), kl, mask, kl_coef=0.5)
    assert torch.allclose(rewards, t(0.0, -0.05, -0.1 + 3.0, 0.0).view(1, 4), atol=1e-6)


def test_token_level_losses_ignore_whatever_sits_at_masked_positions() -> None:
    generator = torch.Generator().manual_seed(1)
    a, b, c = (torch.randn(3, 6, generator=generator) for _ in range(3))
    mask = (torch.rand(3, 6, generator=generator) > 0.3).float()
    junk = torch.randn(3, 6, generator=generator) * 100 * (1 - mask)
    for loss_of in (
        lambda x, y, z: ppo_policy_loss(x, y, z, mask, clip_ratio=0.2)[0],
        lambda x, y, z: ppo_value_loss(x, y, z, mask, clip_range=0.2)[0],
        lambda x, y, z: per_token_kl(x, y, mask, estimator="k3")[0].sum(),
    ):
        assert loss_of(a + junk, b + junk, c + junk).item() == pytest.approx(loss_of(a, b, c).item(), abs=1e-5)
