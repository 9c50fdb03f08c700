"""Offline alignment throughput: trimtab's learner vs TRL's DPOTrainer and KTOTrainer.

On a machine with CUDA, first the GPU geometry (`bench.learner_gpu`: a ~0.5B random Llama, ~512-token
rows, bf16, each run in a process of its own). Then, on every machine, two CPU geometries, each measured
on both sides. The default model (config.model.path) at the configured
batch (learner.train), where a step is mostly matrix multiplies; and a ~259k-parameter Llama (the
default model's config and tokenizer at hidden size 64, 2 layers, random weights from a fixed seed,
saved to a temporary directory) at an 8-example batch in one micro-batch, where a step's fixed costs
(Python, operator dispatch, the optimiser) dominate: the shape of design.md's hand-written step.

Within a geometry: same model, same rows (preference pairs and KTO thumbs drawn from the synthetic
world and its simulated users), same global batch and micro-batch (TRL: per-device batch and gradient
accumulation), same torch threads, float32, the same activation checkpointing (learner.train; off by
default), and the same algorithm: the reference log-probs are computed once before training on both
sides (TRL: precompute_ref_log_probs), then every step is one forward+backward over the batch's
sequences (KTO: plus a no-grad forward over the mismatched completions of its KL reference point).
TRL renders the rows with the same chat template into the very same token sequences.

Each side runs `warmup` optimiser steps, then `timed` steps; the wall time between the end of the last
warm-up step and the end of the last step counts, stamped by each loop's own per-step callback. The
two sides alternate `rounds` times (the machine is shared: a slow spell should hit both) and each
side's best run counts. Rows, per geometry and algorithm:
- steps only: examples/s of the timed steps (the reference pass excluded);
- with the reference pass: that pass (timed on its own) amortised over one epoch of the bench rows,
  N / (reference seconds + N / steps-only rate);
- trimtab's achieved GFLOP/s as a share of a float32 torch matmul measured in the same run.

Tokens/s count every sequence's tokens, prompt included, padding excluded, on both sides. FLOPs are
model FLOPs (padding not counted): a forward over T tokens costs 2 * N_linear * T + 4 * n_layers *
d_attn * A, where N_linear counts the weights of every Linear layer (attention and MLP projections and
the LM head; the embedding lookup costs none) and A the (query, key) pairs the causal mask lets through
(T(T+1)/2 for one sequence: QK^T and AV); forward+backward costs 3x a forward. A DPO step is 3 forwards
of chosen and rejected, a KTO step 3 forwards of the completion and 1 of the KL completion, the
reference pass 1 forward of every sequence. trimtab computes a pair's shared prompt once (packed rows,
learner.batching.collate_pairs); its GFLOP/s count the FLOPs it executes, TRL's those of the separate
sequences it computes.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, TrainerCallback

from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from learner.batching import TokenizedExample, shared_prompt_length
from learner.checkpoint import TrainingState
from learner.data import TrainExample, load_records, tokenize_records
from learner.distributed import init_distributed, shutdown
from learner.engine import LoopSettings, train
from learner.logprobs import supports_pair_packing
from learner.models import load_trainable
from learner.objectives import OBJECTIVES
from learner.offline import pad_token_id
from learner.optim import build_optimizer
from learner.reference import reference_logps
from learner.runtime import DTYPES, seed_everything
from trimtab.config import TrimtabConfig
from trimtab.simulation.world import World

Row = dict[str, Any]
ALGORITHMS = ("dpo", "kto")
UNIT = {"dpo": "pairs/s", "kto": "examples/s"}


@dataclass(frozen=True)
class Throughput:
    """One side's measurement on one algorithm's rows."""

    examples_per_s: float  # timed steps only
    reference_s: float  # the one-off reference pass over all `examples` rows
    examples: int

    @property
    def with_reference(self) -> float:
        """Examples/s over one epoch of the rows, the reference pass included."""
        return self.examples / (self.reference_s + self.examples / self.examples_per_s)


@dataclass(frozen=True)
class Work:
    """Mean model work per example of one algorithm's rows (same tokens on both sides)."""

    step_flops: float  # a step's share as trimtab computes it: forward+backward (+ KTO's KL forward)
    nominal_step_flops: float  # the same with every sequence computed on its own, as TRL does
    reference_flops: float
    step_tokens: float  # tokens of the example's sequences (prompt counted in each), padding excluded


def bench_learner(config: TrimtabConfig, warmup: int = 3, timed: int = 20, rounds: int = 2) -> list[Comparison]:
    threads = config.learner.torch_threads or torch.get_num_threads()
    torch.set_num_threads(threads)  # both sides run in this process, on these threads
    peak = matmul_gflops()
    measured: list[Measured] = []
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-learner-") as tmp:
        small = small_geometry(config, Path(tmp) / "small-model", timed * SMALL_TIMED_FACTOR)
        for geometry in (default_geometry(config, timed), small):
            for algorithm in ALGORITHMS:
                measured.append(measure(geometry, algorithm, warmup, rounds, Path(tmp)))
    peak = max(peak, matmul_gflops())  # the best of a measurement before and one after
    rows: list[Comparison] = []
    for m in measured:
        rows += [*comparisons(m, threads, warmup), efficiency(m, Peak("float32 torch.mm 2048^3", peak))]
    return _gpu_rows(config, rounds) + rows


def _gpu_rows(config: TrimtabConfig, rounds: int, algorithms: Sequence[str] = ALGORITHMS) -> list[Comparison]:
    """The GPU geometry's rows (bench.learner_gpu) on a machine with CUDA; none elsewhere."""
    from bench import learner_gpu

    if not learner_gpu.wanted():
        return []
    shape = learner_gpu.shape()
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-learner-gpu-") as tmp:
        measured = learner_gpu.measure_gpu(config, rounds, Path(tmp), algorithms)
    dtype = getattr(torch, shape.dtype)
    size = 8192 if shape.device == "cuda" else 256
    peak = Peak(
        f"{shape.dtype} torch.mm {size}^3 on {shape.device}",
        matmul_gflops(size, device=torch.device(shape.device), dtype=dtype),
    )
    rows: list[Comparison] = []
    for m in measured:
        rows += [*comparisons(m, torch.get_num_threads(), shape.warmup), efficiency(m, peak)]
    return rows


# The small geometry's steps take a few milliseconds: time more of them for a steady rate.
SMALL_TIMED_FACTOR = 3


@dataclass(frozen=True)
class Geometry:
    """A model and batch shape: `config` with model.path and learner.train set to it."""

    label: str  # e.g. "default model, 6.8M params"
    config: TrimtabConfig
    timed: int  # optimiser steps timed after the warm-up


def default_geometry(config: TrimtabConfig, timed: int) -> Geometry:
    return Geometry(f"default model, {_params(config.model.path)} params", config, timed)


def small_geometry(config: TrimtabConfig, out: Path, timed: int, batch_size: int = 8, seed: int = 0) -> Geometry:
    """A ~259k-parameter Llama (the default model's config and tokenizer at hidden 64, 2 layers) at an
    8-example batch, in one micro-batch: the overhead-dominated shape of design.md's hand-written step."""
    model_config = AutoConfig.from_pretrained(config.model.path)
    model_config.update(
        {
            "hidden_size": 64,
            "intermediate_size": 256,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "num_key_value_heads": 1,
            "head_dim": 64,
        }
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(model_config, dtype=torch.float32).save_pretrained(out)
    AutoTokenizer.from_pretrained(config.model.path).save_pretrained(out)
    learner = config.learner
    train = learner.train.model_copy(update={"batch_size": batch_size, "micro_batch_size": batch_size})
    small = config.model_copy(
        update={
            "model": config.model.model_copy(update={"path": out}),
            "learner": learner.model_copy(update={"train": train}),
        }
    )
    label = f"Llama, {_params(out)} params (hidden 64, 2 layers)"
    return Geometry(label, small, timed)


def _params(model_dir: Path) -> str:
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir))
    n = sum(p.numel() for p in model.parameters())
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k"


def measure(geometry: Geometry, algorithm: str, warmup: int, rounds: int, tmp: Path) -> Measured:
    """Both sides on one algorithm's rows at one geometry, alternating `rounds` times."""
    config, timed = geometry.config, geometry.timed
    n_rows = config.learner.train.batch_size * (warmup + timed)  # one epoch each side, no partial batch
    data = world_rows(config, algorithm, n_rows)
    path = tmp / f"{algorithm}.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in data))
    ours: list[Throughput] = []
    theirs: list[Throughput] = []
    for _ in range(rounds):
        ours.append(trimtab_throughput(config, path, algorithm, warmup, timed))
        theirs.append(trl_throughput(config, data, algorithm, warmup, timed, tmp / f"trl-{algorithm}"))
    work = example_work(config.model.path, bench_examples(config, path, algorithm), algorithm)
    return Measured(geometry, algorithm, best(ours), best(theirs), work, _span(ours, theirs))


@dataclass(frozen=True)
class Measured:
    geometry: Geometry
    algorithm: str
    ours: Throughput
    theirs: Throughput
    work: Work
    span: str  # every run's steps-only rate, for the notes


def best(runs: list[Throughput]) -> Throughput:
    """The fastest steps and the fastest reference pass of a side's runs."""
    return Throughput(max(r.examples_per_s for r in runs), min(r.reference_s for r in runs), runs[0].examples)


def _span(ours: list[Throughput], theirs: list[Throughput]) -> str:
    def rates(runs: list[Throughput]) -> str:
        return "/".join(f"{r.examples_per_s:.1f}" for r in runs)

    return f"runs {rates(ours)} vs {rates(theirs)}"


# Data


def world_rows(config: TrimtabConfig, algorithm: str, n: int, seed: int = 11) -> list[Row]:
    """Seed-format rows on training prompts: DPO pairs ordered by gold reward, KTO thumbs by simulated users."""
    world = World(config.world)
    rng = random.Random(f"{seed}:bench-learner:{algorithm}")
    users = world.population()
    rows: list[Row] = []
    for prompt in world.sample_prompts(n, seed=seed):
        first = world.render(prompt, world.sample_style(rng), rng)
        first_score = world.score_prompt(prompt, first)
        if algorithm == "kto":
            label = users.pick(rng).thumb(first_score, rng)
            rows.append({"prompt": prompt.messages, "completion": first, "label": label})
            continue
        second, second_score = first, first_score
        while second_score.reward == first_score.reward:
            second = world.render(prompt, world.sample_style(rng), rng)
            second_score = world.score_prompt(prompt, second)
        chosen, rejected = (first, second) if first_score.reward > second_score.reward else (second, first)
        rows.append({"prompt": prompt.messages, "chosen": chosen, "rejected": rejected})
    return rows


def _trl_rows(rows: list[Row], algorithm: str) -> list[Row]:
    """TRL's conversational format: the responses as assistant turns."""

    def turn(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    if algorithm == "kto":
        return [{"prompt": r["prompt"], "completion": turn(r["completion"]), "label": r["label"]} for r in rows]
    return [{"prompt": r["prompt"], "chosen": turn(r["chosen"]), "rejected": turn(r["rejected"])} for r in rows]


# trimtab


def bench_examples(config: TrimtabConfig, path: Path, algorithm: str) -> list[TrainExample]:
    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    return tokenize_records(load_records(path, algorithm), tokenizer, algorithm, config.learner.train.max_length)


def trimtab_throughput(config: TrimtabConfig, path: Path, algorithm: str, warmup: int, timed: int) -> Throughput:
    """`trimtab learn`'s pieces (learner.phase without its progress bar): load, reference pass, loop."""
    learner = config.learner
    objective = OBJECTIVES[algorithm](learner.loss)
    context = init_distributed(learner)
    try:
        seed_everything(learner.train.seed)
        examples = bench_examples(config, path, algorithm)
        pad_id = pad_token_id(AutoTokenizer.from_pretrained(config.model.path))
        model = load_trainable(
            config.model.path,
            reward_model=False,
            lora=learner.lora,
            context=context,
            dtype=DTYPES[learner.dtype],
            pad_token_id=pad_id,
            activation_checkpointing=learner.train.activation_checkpointing,
        )
        steps = warmup + timed
        state = TrainingState(model, *build_optimizer(model, learner.optim, steps))
        started = time.perf_counter()
        reference = reference_logps(model, examples, learner.train.micro_batch_size, context, pad_id)
        reference_s = time.perf_counter() - started
        clock = StepClock()
        settings = LoopSettings(
            learner.train.batch_size, learner.train.micro_batch_size, steps, learner.train.seed, learner.optim.grad_clip
        )
        train(
            state, examples, reference, objective, settings, context=context, pad_token_id=pad_id, on_step=clock.on_step
        )
    finally:
        shutdown(context)
    return Throughput(clock.rate(warmup, learner.train.batch_size), reference_s, len(examples))


class StepClock:
    """Wall-clock stamps at the end of every optimiser step."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def on_step(self, *_: object) -> None:
        if torch.cuda.is_initialized():  # the step's kernels may still be running
            torch.cuda.synchronize()
        self.stamps.append(time.perf_counter())

    def rate(self, warmup: int, batch_size: int) -> float:
        """Examples/s over the steps after the first `warmup`."""
        timed = len(self.stamps) - warmup
        if warmup < 1 or timed < 1:
            raise RuntimeError(f"{len(self.stamps)} steps stamped; need more than warmup={warmup} >= 1")
        return timed * batch_size / (self.stamps[-1] - self.stamps[warmup - 1])


# TRL


def trl_throughput(
    config: TrimtabConfig, rows: list[Row], algorithm: str, warmup: int, timed: int, out: Path
) -> Throughput:
    """TRL's trainer on the same rows and batch geometry, its reference pass timed inside it."""
    trainer_class, args = _trl_setup(config, algorithm, warmup + timed, out)
    reference_s: list[float] = []

    class TimedTrainer(trainer_class):  # type: ignore[misc, valid-type]
        def _precompute_ref_logps(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            result = super()._precompute_ref_logps(*args, **kwargs)
            reference_s.append(time.perf_counter() - started)
            return result

    from datasets import Dataset

    seed_everything(config.learner.train.seed)
    model = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    clock = StepClock()
    trainer = TimedTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(_trl_rows(rows, algorithm)),
        processing_class=tokenizer,
        callbacks=[_TrlClock(clock)],
    )
    trainer.train()
    return Throughput(clock.rate(warmup, config.learner.train.batch_size), sum(reference_s), len(rows))


def _trl_setup(config: TrimtabConfig, algorithm: str, steps: int, out: Path) -> tuple[type, Any]:
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    learner = config.learner
    train_config = learner.train
    common: dict[str, Any] = {
        "output_dir": str(out),
        "per_device_train_batch_size": train_config.micro_batch_size,
        "gradient_accumulation_steps": train_config.batch_size // train_config.micro_batch_size,
        "max_steps": steps,
        "learning_rate": learner.optim.lr,
        "max_grad_norm": learner.optim.grad_clip,
        "max_length": train_config.max_length,
        "seed": train_config.seed,
        # What trimtab does too: its device and precision (TRL's bf16 mode: float32 masters under
        # autocast), activations checkpointed as configured, the reference precomputed once.
        "bf16": learner.dtype == "bfloat16",
        "fp16": learner.dtype == "float16",
        "gradient_checkpointing": train_config.activation_checkpointing,
        "precompute_ref_log_probs": True,
        "use_cpu": learner.device == "cpu",
        "dataloader_pin_memory": False,
        "report_to": "none",
        "save_strategy": "no",
        "logging_steps": steps,
        "disable_tqdm": True,
    }
    if algorithm == "kto":
        loss = learner.loss
        kto = KTOConfig(
            beta=loss.kto_beta,
            desirable_weight=loss.kto_desirable_weight,
            undesirable_weight=loss.kto_undesirable_weight,
            **common,
        )
        return KTOTrainer, kto
    return DPOTrainer, DPOConfig(beta=learner.loss.dpo_beta, **common)


class _TrlClock(TrainerCallback):
    def __init__(self, clock: StepClock) -> None:
        self.clock = clock

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.clock.on_step()


# FLOPs


def example_work(model_dir: Path, examples: list[TrainExample], algorithm: str) -> Work:
    """Mean FLOPs and tokens per example (see the module docstring for the formula)."""
    model_config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))
    head_dim = getattr(model_config, "head_dim", None) or model_config.hidden_size // model_config.num_attention_heads
    attention = model_config.num_hidden_layers * model_config.num_attention_heads * head_dim
    packs = supports_pair_packing(model)

    def forward(tokens: int, attended: float) -> float:
        """`attended`: the (query, key) pairs the causal mask lets through."""
        return 2.0 * linear * tokens + 4.0 * attention * attended

    def alone(sequence: TokenizedExample) -> float:
        return forward(len(sequence), len(sequence) * (len(sequence) + 1) / 2)

    def pair(first: TokenizedExample, second: TokenizedExample) -> float:
        """Two sequences as trimtab computes them: one packed row when they share a prompt (learner.batching)."""
        p = shared_prompt_length(first, second) if packs else 0
        if not p:
            return alone(first) + alone(second)
        a, b = len(first) - p, len(second) - p
        return forward(p + a + b, p * (p + 1) / 2 + (a + b) * p + a * (a + 1) / 2 + b * (b + 1) / 2)

    step = nominal = reference = tokens = 0.0
    for example in examples:
        first, second = example.sequences
        separate = alone(first) + alone(second)
        if algorithm == "dpo":  # chosen and rejected trained in one forward+backward
            step += 3 * pair(first, second)
            nominal += 3 * separate
        else:  # KTO: the completion trained, the mismatched completion a no-grad forward
            step += 3 * alone(first) + alone(second)
            nominal += 3 * alone(first) + alone(second)
        reference += pair(first, second)
        tokens += len(first) + len(second)
    n = len(examples)
    return Work(step / n, nominal / n, reference / n, tokens / n)


def matmul_gflops(
    size: int = 2048, repeats: int = 5, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> float:
    """Best (size x size) @ (size x size) rate of `repeats`, after a warm-up (on the CPU at the current threads)."""
    device = device or torch.device("cpu")
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)

    def mm() -> None:
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    mm()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        mm()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


@dataclass(frozen=True)
class Peak:
    """What achieved FLOP/s are measured against: a matmul at the geometry's device and dtype."""

    name: str
    gflops: float


# Rows


def comparisons(m: Measured, threads: int, warmup: int) -> list[Comparison]:
    train = m.geometry.config.learner.train
    name = m.algorithm.upper()
    trl = "TRL DPOTrainer" if m.algorithm == "dpo" else "TRL KTOTrainer"
    learner = m.geometry.config.learner
    where = f"{threads} threads, {learner.dtype}" if learner.device == "cpu" else f"{learner.device}, {learner.dtype}"
    setup = f"{m.geometry.label}, batch {train.batch_size} (micro {train.micro_batch_size}), {where}"
    tokens = f"{m.ours.examples_per_s * m.work.step_tokens:,.0f} vs {m.theirs.examples_per_s * m.work.step_tokens:,.0f}"
    return [
        Comparison(
            name=f"{name} training throughput, steps only ({setup})",
            unit=UNIT[m.algorithm],
            candidate="trimtab learner",
            candidate_value=m.ours.examples_per_s,
            baseline=trl,
            baseline_value=m.theirs.examples_per_s,
            notes=f"tokens/s {tokens}; {m.geometry.timed} steps timed after {warmup} warm-up, best of {m.span}",
        ),
        Comparison(
            name=f"{name} training throughput incl. the one-off reference pass ({setup})",
            unit=UNIT[m.algorithm],
            candidate="trimtab learner",
            candidate_value=m.ours.with_reference,
            baseline=trl,
            baseline_value=m.theirs.with_reference,
            notes=f"one epoch of {m.ours.examples} rows; reference pass {m.ours.reference_s:.1f} s vs "
            f"{m.theirs.reference_s:.1f} s",
        ),
    ]


def efficiency(m: Measured, peak: Peak) -> Comparison:
    ours = m.ours.examples_per_s * m.work.step_flops / 1e9
    theirs = m.theirs.examples_per_s * m.work.nominal_step_flops / 1e9
    return Comparison(
        name=f"{m.algorithm.upper()} step achieved GFLOP/s vs a {peak.name.split()[0]} matmul ({m.geometry.label}; "
        "ratio = share of peak)",
        unit="GFLOP/s",
        candidate="trimtab learner",
        candidate_value=ours,
        baseline=peak.name,
        baseline_value=peak.gflops,
        notes=f"TRL {theirs:,.1f} GFLOP/s ({theirs / peak.gflops:.0%}); model GFLOP per example per step: trimtab "
        f"{m.work.step_flops / 1e9:.2f}, as separate sequences {m.work.nominal_step_flops / 1e9:.2f}",
    )


def main(argv: list[str]) -> int:
    """`python -m bench.learner [--gpu]`: this benchmark alone, written to bench/results/learner/; with
    `--gpu` the GPU geometry's rows alone (minutes of a lent GPU are scarce), to bench/results/learner-gpu/."""
    console = Console(stderr=True)
    gpu_only = argv == ["--gpu"]
    if argv and not gpu_only:
        console.print("usage: python -m bench.learner [--gpu]")
        return 2
    from bench import learner_gpu

    if gpu_only and not learner_gpu.wanted():
        console.print(
            f"bench.learner --gpu: torch sees no CUDA device ({learner_gpu.TINY_ENV}=1: toy sizes on the CPU)"
        )
        return 2
    console.print(f"bench: offline DPO and KTO throughput (trimtab learner vs TRL){' on the GPU' if gpu_only else ''}")
    config = simulation_config()
    # --gpu: one run a side and algorithm (four processes, each loading a 0.5B model) to fit a lent machine's
    # minutes; a GPU held alone times steadily. The full bench alternates the sides twice.
    rows = _gpu_rows(config, rounds=1) if gpu_only else bench_learner(config)
    table = write_report(rows, Path(__file__).resolve().parent / "results" / ("learner-gpu" if gpu_only else "learner"))
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
