"""Supervised fine-tuning: the learner's first algorithm (used to build the default model)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from transformers import PreTrainedModel

from learner.batching import TokenizedExample, collate, length_bucketed, width_multiple
from learner.logprobs import batch_token_logprobs
from learner.losses import read_metrics, sft_loss
from learner.optim import build_optimizer
from learner.progress import TrainProgress
from trimtab.config import OptimConfig


@dataclass(frozen=True)
class SFTSettings:
    batch_size: int
    epochs: int
    lr: float
    seed: int
    log_every: int = 10


@dataclass(frozen=True)
class SFTResult:
    steps: int
    final_loss: float  # mean over the last 10% of steps
    examples_per_s: float


def train_sft(
    model: PreTrainedModel,
    examples: Sequence[TokenizedExample],
    pad_token_id: int,
    settings: SFTSettings,
    optim: OptimConfig,
    device: torch.device,
    console: Console,
    metrics_path: Path | None = None,
) -> SFTResult:
    """Train `model` in place on `examples` (prompt tokens masked) and return summary numbers."""
    rng = random.Random(settings.seed)
    steps_per_epoch = -(-len(examples) // settings.batch_size)
    total_steps = steps_per_epoch * settings.epochs
    optimizer, scheduler = build_optimizer(model, optim, total_steps, lr=settings.lr)
    model.train()
    losses: list[float] = []
    step = 0
    with TrainProgress("SFT", total_steps, metrics_path, settings.log_every, console) as progress:
        for _ in range(settings.epochs):
            for group in length_bucketed(examples, settings.batch_size, rng):
                batch = collate(group, pad_token_id, multiple=width_multiple(device))
                token_logps, loss_mask = batch_token_logprobs(model, batch)
                loss, metrics = sft_loss(token_logps, loss_mask)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip)
                optimizer.step()
                scheduler.step()
                step += 1
                values = read_metrics(metrics | {"grad_norm": grad_norm})  # the step's one host sync
                losses.append(values["loss"])
                values["lr"] = float(scheduler.get_last_lr()[0])
                progress.step(step, batch.size, values)
        tail = losses[-max(1, len(losses) // 10) :]
        return SFTResult(step, sum(tail) / len(tail), progress.examples_per_s)
