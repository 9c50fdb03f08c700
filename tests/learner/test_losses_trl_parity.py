"""Parity of the alignment losses with TRL 1.16 on random float32 batches: max abs difference <= 1e-6.

TRL keeps its losses inside trainer methods; each is called here on a stand-in `self` (the trainer
class, never initialised, with only the attributes the method reads) and a stand-in model that returns
prepared log-probs or logits. Where TRL has no comparable function (GAE, the clipped value loss, the
KL-penalised rewards) the reference is a deliberately plain loop over elements written here.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPO and ORPO live in trl.experimental, which warns on import

from trl.experimental.cpo.cpo_trainer import CPOTrainer
from trl.experimental.orpo.orpo_trainer import ORPOTrainer
from trl.trainer.dpo_trainer import DPOTrainer
from trl.trainer.grpo_trainer import GRPOTrainer
from trl.trainer.kto_trainer import KTOTrainer
from trl.trainer.reward_trainer import RewardTrainer

from learner.logprobs import token_logprobs
from learner.losses import (
    PairLogps,
    dpo_loss,
    gae,
    grpo_advantages,
    grpo_loss,
    ipo_loss,
    kl_penalised_rewards,
    kto_loss,
    masked_mean,
    orpo_loss,
    per_token_kl,
    ppo_policy_loss,
    ppo_value_loss,
    reward_model_loss,
    simpo_loss,
)

TOLERANCE = 1e-6
PAIRS, WIDTH, VOCAB = 8, 12, 17
SEEDS = [0, 1, 2]


def max_abs_difference(ours: torch.Tensor | float, theirs: torch.Tensor | float) -> float:
    return (
        (torch.as_tensor(ours, dtype=torch.float32) - torch.as_tensor(theirs, dtype=torch.float32)).abs().max().item()
    )


class StandInAccelerator:
    """One process: gathering and reducing are the identity."""

    device = torch.device("cpu")
    num_processes = 1

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_for_metrics(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def reduce(self, tensor: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
        return tensor


def stand_in(trainer_class: Any, **attributes: Any) -> Any:
    """An uninitialised `trainer_class` carrying `attributes`, plus what every TRL trainer's loss reads."""
    trainer = trainer_class.__new__(trainer_class)
    common = {
        "accelerator": StandInAccelerator(),
        "model": SimpleNamespace(training=True),
        "aux_loss_enabled": False,
        "_metrics": defaultdict(lambda: defaultdict(list)),
        "_total_train_tokens": 0,
        "_tp_size": 1,
    }
    for name, value in (common | attributes).items():
        setattr(trainer, name, value)
    return trainer


class FusedHeadModel:
    """Stands in for a causal LM called with TRL's `fused_lm_head=True`: for each known `input_ids` tensor it
    returns the prepared per-token log-probs (0 where the label is masked), with zero side outputs."""

    def __init__(self, *log_probs_by_input: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.log_probs_by_input = log_probs_by_input

    def __call__(self, input_ids: torch.Tensor, **_: Any) -> SimpleNamespace:
        log_probs = next(lp for ids, lp in self.log_probs_by_input if ids is input_ids)
        zeros = torch.zeros_like(log_probs)
        return SimpleNamespace(log_probs=log_probs, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())


def random_responses(generator: torch.Generator, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs (rows, WIDTH) of plausible size and a right-padded response mask of 1..WIDTH tokens."""
    token_logps = torch.rand(rows, WIDTH, generator=generator).clamp(min=1e-3).log()
    lengths = torch.randint(1, WIDTH + 1, (rows,), generator=generator)
    return token_logps, (torch.arange(WIDTH) < lengths[:, None]).float()


def trl_sequence_inputs(loss_mask: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """TRL's tokenised batch for a one-token prompt followed by the responses that `loss_mask` marks."""
    rows = loss_mask.shape[0]
    completion_mask = torch.cat([torch.zeros(rows, 1), loss_mask], dim=1).long()
    attention_mask = torch.cat([torch.ones(rows, 1), loss_mask], dim=1).long()
    input_ids = torch.randint(0, VOCAB, (rows, WIDTH + 1), generator=generator)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


# DPO and IPO: DPOTrainer._compute_loss; conservative DPO: CPOTrainer.cpo_loss


def trl_dpo(
    loss_type: str, beta: float, token_logps: torch.Tensor, loss_mask: torch.Tensor, reference: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    generator = torch.Generator().manual_seed(99)
    inputs = trl_sequence_inputs(loss_mask, generator)
    reference_chosen, reference_rejected = reference.chunk(2)
    inputs |= {"ref_chosen_logps": reference_chosen, "ref_rejected_logps": reference_rejected}
    trainer = stand_in(
        DPOTrainer,
        beta=beta,
        label_smoothing=0.0,
        loss_types=[loss_type],
        loss_weights=[1.0],
        f_divergence_type="reverse_kl",
        ld_alpha=None,
        precompute_ref_logps=True,
        use_weighting=False,
    )
    model = FusedHeadModel((inputs["input_ids"], token_logps * loss_mask))
    loss = DPOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    return loss, {name: values[-1] for name, values in trainer._metrics["train"].items()}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta", [0.1, 1.0])
def test_dpo_matches_trl_dpo_trainer(seed: int, beta: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    token_logps, loss_mask = random_responses(generator, 2 * PAIRS)
    reference = (token_logps * loss_mask).sum(-1) + torch.randn(2 * PAIRS, generator=generator)
    ours, metrics = dpo_loss(PairLogps.from_token_logps(token_logps, loss_mask, reference), beta=beta)
    theirs, trl_metrics = trl_dpo("sigmoid", beta, token_logps, loss_mask, reference)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert metrics["reward_chosen"] == pytest.approx(trl_metrics["rewards/chosen"], abs=TOLERANCE)
    assert metrics["reward_rejected"] == pytest.approx(trl_metrics["rewards/rejected"], abs=TOLERANCE)
    assert metrics["reward_margin"] == pytest.approx(trl_metrics["rewards/margins"], abs=TOLERANCE)
    assert metrics["reward_accuracy"] == trl_metrics["rewards/accuracies"]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("label_smoothing", [0.1, 0.3])
def test_conservative_dpo_matches_trl_cpo_loss_on_log_ratios(seed: int, label_smoothing: float) -> None:
    # CPOTrainer.cpo_loss(loss_type="sigmoid") is cDPO over whatever it is given as "log-probs"; given the
    # log-ratios log pi_theta - log pi_ref it is DPO with label smoothing.
    generator = torch.Generator().manual_seed(seed)
    policy, reference = torch.randn(2, 2 * PAIRS, generator=generator) * 5 - 20
    pairs = PairLogps.from_token_logps(policy[:, None], torch.ones(2 * PAIRS, 1), reference)
    ours, _ = dpo_loss(pairs, beta=0.2, label_smoothing=label_smoothing)
    trainer = stand_in(CPOTrainer, alpha=0.0, loss_type="sigmoid", beta=0.2, label_smoothing=label_smoothing)
    chosen_logratios, rejected_logratios = (policy - reference).chunk(2)
    theirs, _, _ = CPOTrainer.cpo_loss(trainer, chosen_logratios, rejected_logratios)
    assert max_abs_difference(ours, theirs.mean()) <= TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_ipo_matches_trl_dpo_trainer_length_normalised(seed: int, tau: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    token_logps, loss_mask = random_responses(generator, 2 * PAIRS)
    reference = (token_logps * loss_mask).sum(-1) + torch.randn(2 * PAIRS, generator=generator)
    ours, _ = ipo_loss(PairLogps.from_token_logps(token_logps, loss_mask, reference), tau=tau)
    theirs, _ = trl_dpo("ipo", tau, token_logps, loss_mask, reference)
    assert max_abs_difference(ours, theirs) <= TOLERANCE


# SimPO: CPOTrainer.get_batch_loss_metrics; ORPO: ORPOTrainer.get_batch_loss_metrics (both from logits)


def random_pair_logits(seed: int) -> tuple[dict[str, Any], Callable[..., SimpleNamespace], PairLogps]:
    """Logits for PAIRS chosen then PAIRS rejected sequences (one prompt token, then a response), the batch
    TRL's paired trainers read, a model returning those logits, and our PairLogps computed from them."""
    generator = torch.Generator().manual_seed(seed)
    _, loss_mask = random_responses(generator, 2 * PAIRS)
    inputs = trl_sequence_inputs(loss_mask, generator)
    logits = torch.randn(2 * PAIRS, WIDTH + 1, VOCAB, generator=generator) * 2
    labels = inputs["input_ids"].masked_fill(inputs["completion_mask"] == 0, -100)
    batch: dict[str, Any] = {}
    for side, rows in (("chosen", slice(0, PAIRS)), ("rejected", slice(PAIRS, None))):
        batch |= {
            f"{side}_input_ids": inputs["input_ids"][rows],
            f"{side}_attention_mask": inputs["attention_mask"][rows],
            f"{side}_labels": labels[rows],
        }
    ours = PairLogps.from_token_logps(token_logprobs(logits, inputs["input_ids"]), loss_mask)
    return batch, lambda *_, **__: SimpleNamespace(logits=logits), ours


@pytest.mark.parametrize("seed", SEEDS)
def test_simpo_matches_trl_cpo_trainer(seed: int) -> None:
    batch, model, pairs = random_pair_logits(seed)
    ours, metrics = simpo_loss(pairs, beta=2.0, gamma=0.7)
    trainer = stand_in(
        CPOTrainer,
        loss_type="simpo",
        beta=2.0,
        simpo_gamma=0.7,
        label_smoothing=0.0,
        alpha=0.0,
        cpo_alpha=0.0,
        is_encoder_decoder=False,
        pad_token_id=0,
    )
    theirs, trl_metrics = CPOTrainer.get_batch_loss_metrics(trainer, model, batch)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert metrics["reward_margin"] == pytest.approx(trl_metrics["rewards/margins"], abs=TOLERANCE)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lam", [0.1, 1.0])
def test_orpo_matches_trl_orpo_trainer(seed: int, lam: float) -> None:
    batch, model, pairs = random_pair_logits(seed)
    ours, metrics = orpo_loss(pairs, lam=lam)
    trainer = stand_in(ORPOTrainer, beta=lam, is_encoder_decoder=False, padding_value=0)
    theirs, trl_metrics = ORPOTrainer.get_batch_loss_metrics(trainer, model, batch)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert metrics["nll"] == pytest.approx(trl_metrics["nll_loss"], abs=TOLERANCE)
    assert metrics["log_odds_ratio"] == pytest.approx(trl_metrics["log_odds_chosen"], abs=TOLERANCE)


# KTO: KTOTrainer._compute_loss


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kl_shift", [0.8, -0.8])  # the reference point z_0 above 0, and clamped at 0
def test_kto_matches_trl_kto_trainer(seed: int, kl_shift: float) -> None:
    generator = torch.Generator().manual_seed(seed)
    token_logps, loss_mask = random_responses(generator, PAIRS)
    kl_token_logps, kl_mask = random_responses(generator, PAIRS)
    policy, policy_kl = (token_logps * loss_mask).sum(-1), (kl_token_logps * kl_mask).sum(-1)
    reference = policy + torch.randn(PAIRS, generator=generator)
    reference_kl = policy_kl - kl_shift + 0.1 * torch.randn(PAIRS, generator=generator)
    desirable = torch.arange(PAIRS) % 3 != 0
    ours, metrics = kto_loss(
        policy, reference, desirable, policy_kl, reference_kl, beta=0.3, desirable_weight=1.0, undesirable_weight=1.5
    )

    inputs = trl_sequence_inputs(loss_mask, generator)
    kl_inputs = trl_sequence_inputs(kl_mask, generator)
    inputs |= {f"KL_{name}": value for name, value in kl_inputs.items()}
    inputs |= {"label": desirable, "ref_logps": reference, "ref_KL_logps": reference_kl}
    trainer = stand_in(
        KTOTrainer,
        loss_type="kto",
        beta=0.3,
        desirable_weight=1.0,
        undesirable_weight=1.5,
        calculate_KL=True,
        precompute_ref_logps=True,
    )
    model = FusedHeadModel(
        (inputs["input_ids"], token_logps * loss_mask), (inputs["KL_input_ids"], kl_token_logps * kl_mask)
    )
    theirs = KTOTrainer._compute_loss(trainer, model, inputs, return_outputs=False)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert metrics["kl"] == pytest.approx(trainer._metrics["train"]["kl"][-1], abs=TOLERANCE)
    assert (metrics["kl"] > 0) == (kl_shift > 0)


# Reward model: RewardTrainer.compute_loss


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(("with_margin", "center_coefficient"), [(False, None), (True, None), (True, 0.01)])
def test_reward_model_loss_matches_trl_reward_trainer(
    seed: int, with_margin: bool, center_coefficient: float | None
) -> None:
    generator = torch.Generator().manual_seed(seed)
    chosen, rejected = torch.randn(2, PAIRS, generator=generator) * 3
    margin = torch.rand(PAIRS, generator=generator) if with_margin else None
    ours, metrics = reward_model_loss(chosen, rejected, margin=margin, center_coefficient=center_coefficient or 0.0)

    inputs: dict[str, Any] = {"attention_mask": torch.ones(2 * PAIRS, 4)}
    if margin is not None:
        inputs["margin"] = margin
    trainer = stand_in(RewardTrainer, args=SimpleNamespace(center_rewards_coefficient=center_coefficient))
    rewards = torch.cat([chosen, rejected])[:, None]
    theirs = RewardTrainer.compute_loss(trainer, lambda **_: SimpleNamespace(logits=rewards), inputs)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert metrics["accuracy"] == trainer._metrics["train"]["accuracy"][-1]
    assert metrics["margin"] == pytest.approx(trainer._metrics["train"]["margin"][-1], abs=TOLERANCE)


# PPO surrogate and k3 KL: GRPOTrainer._compute_loss with token-level advantages and loss_type="bnpo"


def trl_grpo(
    beta: float,
    logps: torch.Tensor,
    old_logps: torch.Tensor,
    reference_logps: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str = "bnpo",
    max_completion_length: int = WIDTH,
) -> tuple[torch.Tensor, dict[str, float]]:
    trainer = stand_in(
        GRPOTrainer,
        model=SimpleNamespace(training=False),  # evaluation mode: no gradient-accumulation scaling
        beta=beta,
        loss_type=loss_type,
        max_completion_length=max_completion_length,
        epsilon_low=0.2,
        epsilon_high=0.2,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_vllm=False,
        _entropy_bonus_enabled=False,
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False),
        _get_per_token_logps_and_entropies=lambda *_, **__: (logps, torch.zeros_like(logps), None),
    )
    rows = logps.shape[0]
    inputs = {
        "prompt_ids": torch.zeros(rows, 1, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 1, dtype=torch.long),
        "completion_ids": torch.zeros_like(mask, dtype=torch.long),
        "completion_mask": mask,
        "advantages": advantages,
        "old_per_token_logps": old_logps,
        "ref_per_token_logps": reference_logps,
    }
    loss = GRPOTrainer._compute_loss(trainer, None, inputs)
    return loss, {name: values[-1] for name, values in trainer._metrics["eval"].items()}


def random_rollout(seed: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    old_logps, mask = random_responses(generator, PAIRS)
    logps = old_logps + 0.3 * torch.randn(PAIRS, WIDTH, generator=generator)  # ratios beyond the clip range
    reference_logps = old_logps + 0.3 * torch.randn(PAIRS, WIDTH, generator=generator)
    advantages = torch.randn(PAIRS, WIDTH, generator=generator)
    return logps, old_logps, reference_logps, advantages, mask


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_clipped_surrogate_matches_trl_grpo_bnpo_loss(seed: int) -> None:
    logps, old_logps, reference_logps, advantages, mask = random_rollout(seed)
    ours, metrics = ppo_policy_loss(logps, old_logps, advantages, mask, clip_ratio=0.2)
    theirs, trl_metrics = trl_grpo(0.0, logps, old_logps, reference_logps, advantages, mask)
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    assert 0 < metrics["clip_fraction"] == pytest.approx(trl_metrics["clip_ratio/region_mean"], abs=TOLERANCE)


@pytest.mark.parametrize("seed", SEEDS)
def test_k3_kl_matches_trl_grpo_kl_term(seed: int) -> None:
    logps, old_logps, reference_logps, advantages, mask = random_rollout(seed)
    surrogate, _ = ppo_policy_loss(logps, old_logps, advantages, mask, clip_ratio=0.2)
    kl, metrics = per_token_kl(logps, reference_logps, mask, estimator="k3")
    theirs, trl_metrics = trl_grpo(0.04, logps, old_logps, reference_logps, advantages, mask)
    assert max_abs_difference(surrogate + 0.04 * masked_mean(kl, mask), theirs) <= TOLERANCE
    assert metrics["kl_per_token"] == pytest.approx(trl_metrics["kl"], abs=TOLERANCE)


# GRPO's loss: GRPOTrainer._compute_loss with one group-relative advantage per completion, each aggregation


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    ("aggregation", "loss_type"), [("sequence_mean", "grpo"), ("token_mean", "bnpo"), ("fixed_length", "dr_grpo")]
)
def test_grpo_loss_and_its_gradient_match_trl_grpo_trainer(seed: int, aggregation: str, loss_type: str) -> None:
    logps, old_logps, reference_logps, _, mask = random_rollout(seed)
    advantages = grpo_advantages(torch.randn(PAIRS, generator=torch.Generator().manual_seed(seed)), group_size=4)
    logps.requires_grad_()
    hyper_parameters = {"clip_ratio": 0.2, "kl_coef": 0.04, "aggregation": aggregation, "max_length": WIDTH + 4}
    ours, metrics = grpo_loss(logps, old_logps, reference_logps, advantages, mask, **hyper_parameters)
    theirs, trl_metrics = trl_grpo(
        0.04, logps, old_logps, reference_logps, advantages, mask, loss_type=loss_type, max_completion_length=WIDTH + 4
    )
    assert max_abs_difference(ours, theirs) <= TOLERANCE
    (our_gradient,), (their_gradient,) = torch.autograd.grad(ours, logps), torch.autograd.grad(theirs, logps)
    assert max_abs_difference(our_gradient, their_gradient) <= TOLERANCE
    assert 0 < metrics["clip_fraction"] == pytest.approx(trl_metrics["clip_ratio/region_mean"], abs=TOLERANCE)
    assert metrics["kl"] == pytest.approx(trl_metrics["kl"], abs=TOLERANCE)


# No TRL counterpart (TRL 1.16 has no PPOTrainer): plain element-by-element references


def reference_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> float:
    total, count = 0.0, 0.0
    for v, v_old, target, m in zip(
        values.flatten(), old_values.flatten(), returns.flatten(), mask.flatten(), strict=True
    ):
        clipped = min(max(v.item(), v_old.item() - clip_range), v_old.item() + clip_range)
        total += m.item() * max((v.item() - target.item()) ** 2, (clipped - target.item()) ** 2)
        count += m.item()
    return 0.5 * total / count


def reference_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_t = sum_{l >= 0} (gamma lam)^l delta_{t+l} over the row's response span, from the definition."""
    advantages = torch.zeros_like(rewards, dtype=torch.float64)
    for row in range(rewards.shape[0]):
        span = mask[row].nonzero().flatten().tolist()
        deltas = [
            rewards[row, t].item()
            + (gamma * values[row, t + 1].item() if t + 1 in span else 0.0)
            - values[row, t].item()
            for t in span
        ]
        for i, t in enumerate(span):
            advantages[row, t] = sum((gamma * lam) ** k * delta for k, delta in enumerate(deltas[i:]))
    return advantages, (advantages + values.double()) * mask


@pytest.mark.parametrize("seed", SEEDS)
def test_ppo_value_loss_matches_a_plain_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    old_values, values, returns = torch.randn(3, PAIRS, WIDTH, generator=generator)
    _, mask = random_responses(generator, PAIRS)
    ours, _ = ppo_value_loss(values, old_values, returns, mask, clip_range=0.2)
    assert max_abs_difference(ours, reference_value_loss(values, old_values, returns, mask, 0.2)) <= TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_gae_matches_the_sum_of_discounted_td_errors(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    rewards, values = torch.randn(2, PAIRS, WIDTH, generator=generator)
    _, response = random_responses(generator, PAIRS)
    prompt_lengths = torch.randint(0, 4, (PAIRS,), generator=generator)
    mask = torch.stack([response[i].roll(int(n)) * (torch.arange(WIDTH) >= n) for i, n in enumerate(prompt_lengths)])
    estimate = gae(rewards, values, mask, gamma=0.95, lam=0.9)
    advantages, returns = reference_gae(rewards, values, mask, 0.95, 0.9)
    assert max_abs_difference(estimate.advantages, advantages) <= TOLERANCE
    assert max_abs_difference(estimate.returns, returns) <= TOLERANCE


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_penalised_rewards_match_a_plain_reference(seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    scores, (kl, _) = torch.randn(PAIRS, generator=generator), random_responses(generator, PAIRS)
    _, mask = random_responses(generator, PAIRS)
    expected = torch.zeros(PAIRS, WIDTH)
    for row in range(PAIRS):
        span = mask[row].nonzero().flatten().tolist()
        for t in span:
            expected[row, t] = -0.1 * kl[row, t] + (scores[row] if t == span[-1] else 0.0)
    assert max_abs_difference(kl_penalised_rewards(scores, kl, mask, kl_coef=0.1), expected) <= TOLERANCE
