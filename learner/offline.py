"""`trimtab learn`: one offline run, read top to bottom: setup, reference pass, train loop, save, publish.

Runs as one process or as every rank under torchrun; rank 0 alone shows progress, writes the
checkpoint and publishes it to the registry.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from learner.data import load_records, tokenize_records
from learner.distributed import DistContext, full_state_dict, init_distributed, shard_model, shutdown
from learner.engine import LoopSettings, OnStep, train
from learner.objectives import OBJECTIVES
from learner.optim import build_optimizer
from learner.progress import TrainProgress
from learner.reference import reference_logps
from learner.runtime import device_and_dtype, seed_everything
from trimtab.config import TrimtabConfig
from trimtab.registry import Registry
from trimtab.registry.manifest import MANIFEST

METRICS_FILE = "train_metrics.jsonl"  # published inside the version, next to the weights


@dataclass(frozen=True)
class LearnRequest:
    algorithm: str
    data: Path
    model_dir: Path
    steps: int | None  # None: learner.train.epochs passes over the data


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
        examples = tokenize_records(records, tokenizer, request.algorithm, learner.train.max_length)
        model = load_model(request.model_dir, context, dtype)
        steps = request.steps or learner.train.epochs * (len(examples) // learner.train.batch_size)
        # Built before any forward pass, so that it holds the sharded parameters (see distributed.reshard).
        optimizer, scheduler = build_optimizer(model, learner.optim, steps)
        pad_id = _pad_token_id(tokenizer)
        reference = torch.zeros(len(examples), 0)
        if objective.needs_reference:
            reference = reference_logps(model, examples, learner.train.micro_batch_size, context, pad_id)
        settings = LoopSettings(
            learner.train.batch_size, learner.train.micro_batch_size, steps, learner.train.seed, learner.optim.grad_clip
        )
        with tempfile.TemporaryDirectory(prefix="trimtab-learn-") as out:
            description = f"{request.algorithm.upper()} x{context.world_size}"
            with _progress(context, description, steps, Path(out), learner.log_every_steps, console) as on_step:
                metrics = train(
                    model, examples, reference, objective, optimizer, scheduler, settings, context, pad_id, on_step
                )
            version = save_and_publish(config, request, model, tokenizer, Path(out), context, metrics, steps)
        return LearnResult(version, steps, metrics)
    finally:
        shutdown(context)


def load_model(model_dir: Path, context: DistContext, dtype: torch.dtype) -> nn.Module:
    """The HF causal LM in float32 master weights on this rank's device, sharded with FSDP2."""
    model: nn.Module = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.to(device=context.device)
    shard_model(model, dtype)
    return model


def save_and_publish(
    config: TrimtabConfig,
    request: LearnRequest,
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    context: DistContext,
    metrics: dict[str, float],
    steps: int,
) -> str | None:
    """Gather the full weights (every rank), then on rank 0 save an HF directory and publish it."""
    state = full_state_dict(model)
    if not context.is_main:
        return None
    # A plain (unsharded) twin built on the meta device takes the gathered weights without a copy.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(model.config)
    plain.load_state_dict(state, assign=True)
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
    manifest = Registry(config.registry.root).publish(
        out,
        parent=parent_version(config.registry.root, request.model_dir),
        algorithm=request.algorithm,
        config={"learner": config.learner.model_dump(mode="json"), "steps": steps, "world_size": context.world_size},
        data_source=str(request.data.resolve()),
        metrics={name: value for name, value in metrics.items() if math.isfinite(value)},
    )
    return manifest.id


def parent_version(registry_root: Path, model_dir: Path) -> str | None:
    """The registry version id of `model_dir` when it is a version directory, else None (an import)."""
    is_version = model_dir.resolve().parent == registry_root.resolve() and (model_dir / MANIFEST).is_file()
    return model_dir.resolve().name if is_version else None


def _pad_token_id(tokenizer: PreTrainedTokenizerBase) -> int:
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return int(pad)


@contextlib.contextmanager
def _progress(
    context: DistContext, description: str, steps: int, out: Path, log_every: int, console: Console
) -> Iterator[OnStep]:
    """Rank 0 shows the bar and writes the metrics JSONL; the other ranks report nothing."""
    if not context.is_main:
        yield _ignore
        return
    with TrainProgress(description, steps, out / METRICS_FILE, log_every, console) as progress:
        yield progress.step


def _ignore(step: int, examples: int, metrics: dict[str, float]) -> None:
    return None
