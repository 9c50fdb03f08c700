"""What one micro-batch contributes to the loss of its global batch, per algorithm.

A global batch of N examples is split over ranks and then into micro-batches. Each objective returns
its micro-batch's loss already weighted by its share of the global batch, so that the sum over
micro-batches and ranks IS the loss of the whole global batch: gradient accumulation and data
parallelism then change nothing but the order of floating-point sums. The losses themselves are the
pure functions of `learner.losses`, picked once from `PREFERENCE_LOSSES` / the `OBJECTIVES` dict.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from learner.batching import TokenizedExample, collate, width_multiple
from learner.data import TrainExample
from learner.logprobs import batch_token_logprobs, pair_sequence_logprobs
from learner.losses import PREFERENCE_LOSSES, Metrics, PairLogps, kto_loss, rating_loss, reward_model_loss, sft_loss
from trimtab.config.learner import LossConfig


@dataclass(frozen=True)
class MicroBatch:
    examples: Sequence[TrainExample]
    reference: torch.Tensor  # (n, sequences per example) summed reference log-probs; (n, 0) for SFT


@dataclass(frozen=True)
class GlobalStats:
    """What a micro-batch's weight and some losses need to know about the whole global batch."""

    examples: int
    response_tokens: float  # SFT's loss is a token mean over the global batch
    # KTO's reference point z_0 before clamping (mean policy-minus-reference KL log-ratio), shape (1,) on the
    # device: kept there, so estimating it costs the step no host sync. None for the other objectives.
    kto_kl: torch.Tensor | None = None


Compute = Callable[[nn.Module, MicroBatch, GlobalStats, int], tuple[torch.Tensor, Metrics]]


@dataclass(frozen=True)
class Objective:
    compute: Compute  # (model, micro-batch, global stats, pad id) -> (weighted loss, weighted metrics)
    needs_reference: bool
    metric_names: tuple[str, ...]  # the metrics summed over micro-batches and ranks (fixed: all ranks agree)
    needs_kl_estimate: bool = False  # KTO: estimate z_0 over the global batch before the micro-batches
    reward_model: bool = False  # trains a scalar head (sequence classification), not the causal LM


def summed_logps(model: nn.Module, sequences: Sequence[TokenizedExample], pad_token_id: int) -> torch.Tensor:
    """sum_t log pi(y_t | x, y_<t) over the response tokens of each sequence, shape (n,)."""
    token_logps, mask = _token_logps(model, sequences, pad_token_id)
    return (token_logps * mask).sum(-1)


def _token_logps(
    model: nn.Module, sequences: Sequence[TokenizedExample], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    device = next(model.parameters()).device
    return batch_token_logprobs(model, collate(sequences, pad_token_id, multiple=width_multiple(device)))


def example_weights(micro: MicroBatch, device: torch.device) -> torch.Tensor | None:
    """The examples' loss weights, or None when all are 1 (the offline case: the losses' plain means)."""
    if all(e.weight == 1.0 for e in micro.examples):
        return None
    return torch.tensor([e.weight for e in micro.examples], device=device)


def _weighted(metrics: Metrics, names: tuple[str, ...], weight: float | torch.Tensor) -> Metrics:
    return {name: metrics[name] * weight for name in names}


SFT_METRICS = ("loss",)
PAIR_METRICS = ("loss", "reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy")
KTO_METRICS = ("loss", "kl")
ORPO_METRICS = ("loss", "nll", "odds_ratio_loss", "log_odds_ratio", "reward_accuracy")
RM_METRICS = ("loss", "accuracy", "margin", "mean_reward")
RATING_METRICS = ("loss", "accuracy", "mean_reward")


def sft_compute(
    model: nn.Module, micro: MicroBatch, stats: GlobalStats, pad_token_id: int
) -> tuple[torch.Tensor, Metrics]:
    token_logps, mask = _token_logps(model, [e.sequences[0] for e in micro.examples], pad_token_id)
    loss, metrics = sft_loss(token_logps, mask, example_weights(micro, token_logps.device))
    # sft_loss is this micro-batch's token mean; weigh it by its tokens' share of the global batch's.
    weight = metrics["tokens"] / stats.response_tokens
    return loss * weight, _weighted(metrics, SFT_METRICS, weight)


def pair_compute(
    model: nn.Module,
    micro: MicroBatch,
    stats: GlobalStats,
    pad_token_id: int,
    *,
    algorithm: str,
    hyper: dict[str, float],
    metric_names: tuple[str, ...],
) -> tuple[torch.Tensor, Metrics]:
    # One forward over the pairs, each prompt computed once; rows [chosen_1..chosen_n, rejected_1..rejected_n],
    # the layout PairLogps expects.
    pairs_of_sequences = [(e.sequences[0], e.sequences[1]) for e in micro.examples]
    token_logps, mask = pair_sequence_logprobs(model, pairs_of_sequences, pad_token_id)
    reference = None  # ORPO and SimPO are reference-free
    if micro.reference.shape[1]:
        reference = torch.cat([micro.reference[:, 0], micro.reference[:, 1]]).to(token_logps.device)
    pairs = PairLogps.from_token_logps(token_logps, mask, reference, example_weights(micro, token_logps.device))
    loss, metrics = PREFERENCE_LOSSES[algorithm](pairs, **hyper)
    weight = len(micro.examples) / stats.examples
    return loss * weight, _weighted(metrics, metric_names, weight)


def kto_compute(
    model: nn.Module, micro: MicroBatch, stats: GlobalStats, pad_token_id: int, *, hyper: dict[str, float]
) -> tuple[torch.Tensor, Metrics]:
    policy = summed_logps(model, [e.sequences[0] for e in micro.examples], pad_token_id)
    reference = micro.reference[:, 0].to(policy.device)
    desirable = torch.tensor([e.desirable for e in micro.examples], device=policy.device)
    # z_0 was estimated over the whole global batch beforehand (learner.engine.global_stats), so it is the
    # same whatever the micro-batching; kto_loss takes the mean of (policy - reference), here one number.
    if stats.kto_kl is None:
        raise ValueError("KTO needs the global batch's KL estimate (Objective.needs_kl_estimate)")
    kl_policy = stats.kto_kl.to(policy.device)
    weights = example_weights(micro, policy.device)
    loss, metrics = kto_loss(
        policy, reference, desirable, kl_policy, torch.zeros_like(kl_policy), **hyper, weights=weights
    )
    weight = len(micro.examples) / stats.examples
    return loss * weight, _weighted(metrics, KTO_METRICS, weight)


def reward_model_compute(
    model: nn.Module, micro: MicroBatch, stats: GlobalStats, pad_token_id: int, *, center_coefficient: float
) -> tuple[torch.Tensor, Metrics]:
    """Scalar rewards r(x, y) read by the sequence-classification head at each sequence's last token."""
    sequences = [e.sequences[0] for e in micro.examples] + [e.sequences[1] for e in micro.examples]
    chosen, rejected = _rewards(model, sequences, pad_token_id).chunk(2)
    loss, metrics = reward_model_loss(chosen, rejected, center_coefficient=center_coefficient)
    weight = len(micro.examples) / stats.examples
    return loss * weight, _weighted(metrics, RM_METRICS, weight)


def rating_compute(
    model: nn.Module, micro: MicroBatch, stats: GlobalStats, pad_token_id: int
) -> tuple[torch.Tensor, Metrics]:
    """The reward model on single rated answers (the online learner's ratings): `rating_loss`."""
    rewards = _rewards(model, [e.sequences[0] for e in micro.examples], pad_token_id)
    targets = torch.tensor([e.target for e in micro.examples], device=rewards.device)
    loss, metrics = rating_loss(rewards, targets)
    weight = len(micro.examples) / stats.examples
    return loss * weight, _weighted(metrics, RATING_METRICS, weight)


def _rewards(model: nn.Module, sequences: Sequence[TokenizedExample], pad_token_id: int) -> torch.Tensor:
    """Scalar rewards r(x, y), shape (n,), read by the sequence-classification head at each last token."""
    device = next(model.parameters()).device
    batch = collate(sequences, pad_token_id, multiple=width_multiple(device)).to(device)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return logits.squeeze(-1).float()


@torch.no_grad()
def kto_kl_sum(model: nn.Module, micro: MicroBatch, pad_token_id: int) -> torch.Tensor:
    """sum over the micro-batch of log pi_theta(y'|x) - log pi_ref(y'|x) for the mismatched completions, 0-dim
    on the model's device. Without a graph: z_0 enters the loss as a constant (KTO detaches it)."""
    policy = summed_logps(model, [e.sequences[1] for e in micro.examples], pad_token_id)
    return (policy - micro.reference[:, 1].to(policy.device)).sum()


def _sft(loss: LossConfig) -> Objective:
    return Objective(sft_compute, needs_reference=False, metric_names=SFT_METRICS)


def _pairwise(
    algorithm: str, hyper: dict[str, float], needs_reference: bool, metric_names: tuple[str, ...] = PAIR_METRICS
) -> Objective:
    compute = partial(pair_compute, algorithm=algorithm, hyper=hyper, metric_names=metric_names)
    return Objective(compute, needs_reference, metric_names)


def _dpo(loss: LossConfig) -> Objective:
    return _pairwise("dpo", {"beta": loss.dpo_beta, "label_smoothing": loss.dpo_label_smoothing}, True)


def _spin(loss: LossConfig) -> Objective:
    # SPIN's loss (Chen et al. 2024, eq. 4.7, logistic l) is DPO's with the previous iterate as the
    # reference and the model's own generation as the rejected side; `learner.spin` supplies both.
    return _pairwise("dpo", {"beta": loss.spin_beta}, True)


def _ipo(loss: LossConfig) -> Objective:
    return _pairwise("ipo", {"tau": loss.ipo_tau}, True)


def _simpo(loss: LossConfig) -> Objective:
    return _pairwise("simpo", {"beta": loss.simpo_beta, "gamma": loss.simpo_gamma}, False)


def _orpo(loss: LossConfig) -> Objective:
    # Under gradient accumulation ORPO's SFT term is a token mean per micro-batch, weighted by the
    # micro-batch's share of examples (TRL does the same per device batch), so unlike the other
    # objectives its loss depends slightly on the micro-batch split.
    return _pairwise("orpo", {"lam": loss.orpo_lambda}, False, ORPO_METRICS)


def _rm(loss: LossConfig) -> Objective:
    compute = partial(reward_model_compute, center_coefficient=loss.rm_center_coefficient)
    return Objective(compute, needs_reference=False, metric_names=RM_METRICS, reward_model=True)


def _rm_rating(loss: LossConfig) -> Objective:
    return Objective(rating_compute, needs_reference=False, metric_names=RATING_METRICS, reward_model=True)


def _kto(loss: LossConfig) -> Objective:
    hyper = {"beta": loss.kto_beta, "desirable_weight": loss.kto_desirable_weight}
    hyper["undesirable_weight"] = loss.kto_undesirable_weight
    return Objective(partial(kto_compute, hyper=hyper), True, KTO_METRICS, needs_kl_estimate=True)


# Algorithm name -> the objective with its hyper-parameters bound from config, chosen once per run.
OBJECTIVES: dict[str, Callable[[LossConfig], Objective]] = {
    "sft": _sft,
    "steerlm": _sft,  # attribute-conditioned SFT: the attributes are in the prompt (learner.data)
    "rm": _rm,
    "dpo": _dpo,
    "ipo": _ipo,
    "orpo": _orpo,
    "simpo": _simpo,
    "kto": _kto,
    "spin": _spin,
}

# The online learner also trains its reward model on single rated answers (ratings have no offline format).
ONLINE_OBJECTIVES: dict[str, Callable[[LossConfig], Objective]] = OBJECTIVES | {"rm_rating": _rm_rating}
