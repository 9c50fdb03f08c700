"""`trimtab learn`: one offline run, read top to bottom: setup, train (one phase, or SPIN's iterations),
save, publish.

Runs as one process or as every rank under torchrun; rank 0 alone shows progress, writes the
result and publishes it to the registry.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from learner.data import load_records, tokenize_records
from learner.distributed import DistContext, init_distributed, shutdown
from learner.models import load_trainable
from learner.objectives import OBJECTIVES
from learner.phase import METRICS_FILE, PhaseSetup, train_phase
from learner.publish import Contents, VersionRecord, exported, publish
from learner.resume import phase_checkpoints
from learner.runtime import device_and_dtype, seed_everything
from learner.spin import run_spin
from trimtab.config import TrimtabConfig
from trimtab.registry import Registry

__all__ = ["METRICS_FILE", "LearnRequest", "LearnResult", "run_learn"]


@dataclass(frozen=True)
class LearnRequest:
    algorithm: str
    data: Path
    model_dir: Path
    steps: int | None  # None: learner.train.epochs passes over the data (per SPIN iteration)
    checkpoint_dir: Path | None = None  # --checkpoint-dir: overrides learner.checkpoint.directory


@dataclass(frozen=True)
class LearnResult:
    version_id: str | None  # on rank 0; None on the other ranks
    steps: int
    metrics: dict[str, float]  # the last step's


def run_learn(config: TrimtabConfig, request: LearnRequest, console: Console) -> LearnResult:
    learner = config.learner
    objective = OBJECTIVES[request.algorithm](learner.loss)
    context = init_distributed(learner)
    try:
        _, dtype = device_and_dtype(learner)
        seed_everything(learner.train.seed)
        tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
        records = load_records(request.data, request.algorithm)
        pad_id = pad_token_id(tokenizer)
        model = load_trainable(
            request.model_dir,
            reward_model=objective.reward_model,
            lora=learner.lora,
            context=context,
            dtype=dtype,
            pad_token_id=pad_id,
            activation_checkpointing=learner.train.activation_checkpointing,
        )
        checkpoints = phase_checkpoints(
            learner, request.algorithm, request.data, request.model_dir, request.checkpoint_dir, context, console
        )
        with tempfile.TemporaryDirectory(prefix="trimtab-learn-") as out:
            setup = PhaseSetup(learner, context, pad_id, Path(out), console, checkpoints)
            if request.algorithm == "spin":
                result = run_spin(config, setup, model, tokenizer, records, request.model_dir, request.steps)
            else:
                examples = tokenize_records(records, tokenizer, request.algorithm, learner.train.max_length)
                result = train_phase(setup, model, examples, objective, request.algorithm.upper(), request.steps)
            trained = Trained(
                model=model,
                tokenizer=tokenizer,
                algorithm=request.algorithm,
                model_dir=request.model_dir,
                data_source=str(request.data.resolve()),
                steps=result.steps,
                metrics=result.metrics,
                reward_model=objective.reward_model,
            )
            version = save_and_publish(config, trained, context, setup.out)
        return LearnResult(version, result.steps, result.metrics)
    finally:
        shutdown(context)


@dataclass(frozen=True)
class Trained:
    """A finished run's model and what its version records."""

    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    algorithm: str
    model_dir: Path  # where training started: the parent (a LoRA adapter's base)
    data_source: str
    steps: int
    metrics: dict[str, float]
    reward_model: bool = False
    details: dict[str, object] = field(default_factory=dict)  # more of the run for the manifest's config


def save_and_publish(config: TrimtabConfig, trained: Trained, context: DistContext, out: Path) -> str | None:
    """Gather the full weights (every rank), then on rank 0 save an HF directory at `out` (beside the run's
    metrics log) and publish it; its id on rank 0, None elsewhere.

    A LoRA policy is published as an adapter on the registry version of `trained.model_dir` (imported
    into the registry first when it is a plain directory): the base serving must run it on."""
    lora = config.learner.lora
    contents = Contents(trained.tokenizer, lora, reward_model=trained.reward_model)
    with exported(trained.model, contents, context, directory=out) as written:
        if written is None:
            return None
        registry = Registry(config.registry.root)
        parent = registry.version_of(trained.model_dir)
        base = None
        if lora.enabled and not trained.reward_model:
            parent = base = registry.import_once(trained.model_dir).id
        record = VersionRecord(
            parent=parent,
            base=base,
            algorithm=trained.algorithm,
            config={
                "learner": config.learner.model_dump(mode="json"),
                "steps": trained.steps,
                "world_size": context.world_size,
                **trained.details,
            },
            data_source=trained.data_source,
            metrics=trained.metrics,
        )
        return publish(registry, written, record)


def pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)
