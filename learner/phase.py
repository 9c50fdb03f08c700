"""One training phase on a loaded model: reference pass, optimiser, loop with progress.

An offline run is one phase; SPIN runs one per self-play iteration on the same model object, so each
iteration's reference is the previous iterate, as the paper's loss requires.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn

from learner.checkpoint import TrainingState
from learner.data import TrainExample
from learner.distributed import DistContext
from learner.engine import LoopSettings, OnStep, train
from learner.objectives import Objective
from learner.optim import build_optimizer
from learner.progress import TrainProgress
from learner.reference import reference_logps
from learner.resume import PhaseCheckpoints, start_phase
from trimtab.config import LearnerConfig

METRICS_FILE = "train_metrics.jsonl"  # published inside the version, next to the weights


@dataclass(frozen=True)
class PhaseSetup:
    """What every phase of a run shares."""

    learner: LearnerConfig
    context: DistContext
    pad_token_id: int
    out: Path  # the run's output directory; the metrics JSONL accumulates there over phases
    console: Console
    checkpoints: PhaseCheckpoints | None = None  # None: no checkpoints, nothing to resume


@dataclass(frozen=True)
class PhaseResult:
    steps: int
    metrics: dict[str, float]  # the last step's


def train_phase(
    setup: PhaseSetup,
    model: nn.Module,
    examples: Sequence[TrainExample],
    objective: Objective,
    description: str,
    steps: int | None,
    extra_metrics: dict[str, float] | None = None,
) -> PhaseResult:
    """`steps` optimiser steps (None: learner.train.epochs over `examples`) from a fresh optimiser."""
    learner, context = setup.learner, setup.context
    steps = steps or learner.train.epochs * (len(examples) // learner.train.batch_size)
    # Built before any forward pass, so that it holds the sharded parameters (see distributed.reshard).
    state = TrainingState(model, *build_optimizer(model, learner.optim, steps))
    reference = torch.zeros(len(examples), 0)
    if objective.needs_reference:
        reference = reference_logps(model, examples, learner.train.micro_batch_size, context, setup.pad_token_id)
    # After the reference pass, which must score the initial weights, not the checkpoint's.
    begin = start_phase(setup.checkpoints, state, steps, setup.out / METRICS_FILE)
    train_settings = learner.train
    settings = LoopSettings(
        train_settings.batch_size,
        train_settings.micro_batch_size,
        steps,
        train_settings.seed,
        learner.optim.grad_clip,
        start_step=begin.step,
        checkpoint_every=begin.checkpoint_every,
    )
    with _progress(setup, f"{description} x{context.world_size}", steps, begin.step, extra_metrics or {}) as on_step:
        metrics = train(
            state,
            examples,
            reference,
            objective,
            settings,
            context=context,
            pad_token_id=setup.pad_token_id,
            on_step=on_step,
            on_checkpoint=begin.on_checkpoint,
        )
    return PhaseResult(steps, metrics)


@contextlib.contextmanager
def _progress(
    setup: PhaseSetup, description: str, steps: int, start_step: int, extra: dict[str, float]
) -> Iterator[OnStep]:
    """Rank 0 shows the bar and appends to the metrics JSONL; the other ranks report nothing."""
    if not setup.context.is_main:
        yield _ignore
        return
    metrics_path = setup.out / METRICS_FILE
    examples_done = start_step * setup.learner.train.batch_size
    with TrainProgress(
        description, steps, metrics_path, setup.learner.log_every_steps, setup.console, start_step, examples_done
    ) as progress:

        def on_step(step: int, examples: int, metrics: dict[str, float]) -> None:
            progress.step(step, examples, {**extra, **metrics})

        yield on_step


def _ignore(step: int, examples: int, metrics: dict[str, float]) -> None:
    return None
