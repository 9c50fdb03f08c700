"""Training one round: a phase per algorithm on the round's items, with one optimiser for the learner's
whole life (online learning has no end of schedule: constant learning rate, Adam moments carried on).
The reward model (pairs and ratings) is a second model with its own optimiser: `by_head` splits the round.

Each phase's reference is the policy at the phase's start (iterative / online DPO, as in Xiong et al.
2024): log-probs computed once per example by `learner.reference`, so no reference model is held. The
KL to the original model, which this lets drift, is bounded by the promotion gate instead.

Importance weights. Feedback judges responses sampled from the serving version pi_b (recorded with
their summed token log-probs), while the phase trains from pi_t. Each example's loss weight is
multiplied by the truncated per-sequence ratio w = min(c, pi_t(y|x) / pi_b(y|x)) (for a pair, the
product over both responses), computed from the phase's reference log-probs: the truncated
importance-sampling estimator (Ionides 2008), whose truncation c bounds the variance at the price of a
bias toward pi_b. Examples without recorded log-probs (corrections, anchors) keep w = 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from learner.checkpoint import TrainingState
from learner.data import Record, TrainExample, tokenize_records
from learner.distributed import DistContext
from learner.engine import LoopSettings, OnStep, train
from learner.objectives import ONLINE_OBJECTIVES
from learner.online.items import Item
from learner.optim import constant_rate
from learner.reference import reference_logps
from trimtab.config import LearnerConfig
from trimtab.config.learner import LoraSettings, LossConfig


def online_lora(learner: LearnerConfig) -> LoraSettings:
    """The adapter the online learner trains (learner.online.adapter), or full weights."""
    return learner.lora.model_copy(update={"enabled": learner.online.adapter or learner.lora.enabled})


def online_optimizer(
    model: nn.Module, learner: LearnerConfig, lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """Online learning has no schedule's end: a constant rate."""
    return constant_rate(model, lr, learner.optim.grad_clip)


def trains_reward_model(algorithm: str) -> bool:
    """Whether `algorithm` trains the reward model (a scalar head) rather than the policy."""
    return ONLINE_OBJECTIVES[algorithm](LossConfig()).reward_model


def by_head(by_algorithm: dict[str, list[Item]]) -> tuple[dict[str, list[Item]], dict[str, list[Item]]]:
    """A round's items split into (the policy's, the reward model's), each by algorithm."""
    policy = {a: items for a, items in by_algorithm.items() if not trains_reward_model(a)}
    reward = {a: items for a, items in by_algorithm.items() if trains_reward_model(a)}
    return policy, reward


def importance_weights(items: Sequence[Item], reference: torch.Tensor, clip: float) -> list[float]:
    """min(clip, exp(sum_k log pi_t(y_k) - log pi_b(y_k))) per item (1 without recorded log-probs)."""
    weights = []
    for row, item in enumerate(items):
        if item.behaviour_logps is None:
            weights.append(1.0)
            continue
        log_ratio = sum(float(reference[row, k]) - b for k, b in enumerate(item.behaviour_logps))
        weights.append(min(clip, math.exp(min(log_ratio, 50.0))))
    return weights


def train_round(
    state: TrainingState,
    by_algorithm: dict[str, list[Item]],
    *,
    tokenizer: PreTrainedTokenizerBase,
    learner: LearnerConfig,
    context: DistContext,
    pad_token_id: int,
    on_step: OnStep,
    seed: int,
) -> dict[str, float]:
    """Train every algorithm's items in turn; returns metrics prefixed by algorithm."""
    online = learner.online
    metrics: dict[str, float] = {}
    for algorithm in sorted(by_algorithm):
        items = by_algorithm[algorithm]
        objective = ONLINE_OBJECTIVES[algorithm](learner.loss)
        records = [Record(item.prompt, item.responses, item.desirable, target=item.target) for item in items]
        examples = tokenize_records(records, tokenizer, algorithm, learner.train.max_length)
        batch = _batch_size(len(examples), online.batch_size, context.world_size)
        if batch == 0:
            continue  # fewer examples than ranks: they wait in replay for a later round
        reference = torch.zeros(len(examples), 0)
        if objective.needs_reference:
            reference = reference_logps(state.model, examples, learner.train.micro_batch_size, context, pad_token_id)
        weights = importance_weights(items, reference, online.round.importance_clip) if reference.numel() else None
        examples = [
            replace(example, weight=item.weight * (weights[i] if weights else 1.0))
            for i, (example, item) in enumerate(zip(examples, items, strict=True))
        ]
        settings = LoopSettings(
            batch_size=batch,
            micro_batch_size=min(learner.train.micro_batch_size, batch),
            steps=online.round.epochs * (len(examples) // batch),
            seed=seed,
            grad_clip=learner.optim.grad_clip,
        )
        last = train(
            state, examples, reference, objective, settings, context=context, pad_token_id=pad_token_id, on_step=on_step
        )
        metrics |= {f"{algorithm}/{name}": value for name, value in last.items()}
        if weights:
            metrics[f"{algorithm}/importance_weight_mean"] = sum(weights) / len(weights)
    return metrics


def _batch_size(examples: int, configured: int, world_size: int) -> int:
    """The configured batch, or all the examples when fewer, rounded down to a multiple of the ranks."""
    return min(configured, examples) // world_size * world_size


def anchor_loss(
    model: nn.Module, anchors: Sequence[TrainExample], micro_batch_size: int, context: DistContext, pad_token_id: int
) -> float:
    """Mean SFT loss (nats per response token) of the anchor demonstrations under `model`."""
    if not anchors:
        return 0.0
    logps = reference_logps(model, anchors, micro_batch_size, context, pad_token_id)[:, 0]
    tokens = sum(sum(example.sequences[0].loss_mask) for example in anchors)
    return -float(logps.sum()) / max(tokens, 1)
