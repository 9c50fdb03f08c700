"""Checkpoint and resume of an offline run (`trimtab learn --checkpoint-dir DIR`, or learner.checkpoint).

A run started again with the same command finds the newest checkpoint of the same run in DIR and goes
on from it: weights, optimizer, LR schedule, random states, the position in the data (the global
batches are a function of the seed and the step) and the metrics log, so that its loss curve and its
published metrics file equal an uninterrupted run's.

"The same run" is what shapes the loss curve: algorithm, data (by content hash), model directory,
number of steps, world size, dtype, and learner.train/optim/loss/lora. The micro-batch size,
activation checkpointing, device threads and log settings may differ between the killed run and its
resumption: they change memory and speed, not the curve (beyond floating-point summation order).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from learner.checkpoint import Checkpointer, TrainingState
from learner.distributed import DistContext
from learner.engine import OnCheckpoint
from trimtab.config import LearnerConfig
from trimtab.errors import TrimtabError

# Fields that may change between a killed run and its resumption (see the module docstring).
NOT_IN_FINGERPRINT = {"train": {"micro_batch_size", "activation_checkpointing"}}


@dataclass(frozen=True)
class PhaseCheckpoints:
    """Where and how often one run's training phase checkpoints, and which run it is."""

    directory: Path
    every_steps: int
    keep: int
    fingerprint: dict[str, Any]  # the run's, less its step count
    context: DistContext
    console: Console


@dataclass(frozen=True)
class PhaseStart:
    """Where a phase's training loop begins, and its checkpoint hook."""

    step: int = 0  # steps already done (0: from the start)
    checkpoint_every: int = 0  # 0: no checkpoints
    on_checkpoint: OnCheckpoint | None = None


def start_phase(
    checkpoints: PhaseCheckpoints | None, state: TrainingState, steps: int, metrics_path: Path
) -> PhaseStart:
    """With checkpointing on: restore the newest checkpoint of this run, when there is one, into
    `state` and the metrics log at `metrics_path` (rank 0's), and hand out the hook that saves one."""
    if checkpoints is None:
        return PhaseStart()
    context = checkpoints.context
    fingerprint = {**checkpoints.fingerprint, "steps": steps}
    checkpointer = Checkpointer(checkpoints.directory, fingerprint, context, checkpoints.keep)
    found = checkpointer.latest()
    if found is not None:
        checkpointer.restore(found, state)
        if context.is_main:
            metrics_path.write_text(found.metrics_log)
            checkpoints.console.print(f"resuming from step {found.step} of {steps} ({found.path})")

    def save(step: int) -> None:
        log = metrics_path.read_text() if context.is_main else ""
        checkpointer.save(step, state, metrics_log=log)

    return PhaseStart(found.step if found else 0, checkpoints.every_steps, save)


def phase_checkpoints(
    learner: LearnerConfig,
    algorithm: str,
    data: Path,
    model_dir: Path,
    directory: Path | None,
    context: DistContext,
    console: Console,
) -> PhaseCheckpoints | None:
    """Checkpointing for an offline run: into `directory` (--checkpoint-dir), else learner.checkpoint's
    (None: off)."""
    settings = learner.checkpoint
    directory = directory or settings.directory
    if directory is None:
        return None
    if algorithm == "spin":
        raise TrimtabError("checkpoint and resume do not cover SPIN's self-play iterations yet: run it without")
    fingerprint = run_fingerprint(learner, algorithm, data, model_dir)
    return PhaseCheckpoints(directory, settings.every_steps, settings.keep, fingerprint, context, console)


def run_fingerprint(learner: LearnerConfig, algorithm: str, data: Path, model_dir: Path) -> dict[str, Any]:
    """What identifies an offline run (less its step count, which the phase adds)."""
    sections = {name: getattr(learner, name) for name in ("train", "optim", "loss", "lora")}
    relevant: dict[str, Any] = {
        name: section.model_dump(mode="json", exclude=NOT_IN_FINGERPRINT.get(name, set()))
        for name, section in sections.items()
    }
    relevant["dtype"] = learner.dtype
    return {
        "algorithm": algorithm,
        "data sha256": file_sha256(data),
        "model dir": str(model_dir.resolve()),
        **flatten("learner", relevant),
    }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def flatten(prefix: str, tree: Mapping[str, Any]) -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"prefix.a.b": 1}: mismatches then name the exact config key."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}"
        flat.update(flatten(name, value) if isinstance(value, Mapping) else {name: value})
    return flat
