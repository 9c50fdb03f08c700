"""The learner at the geometry people train at on a GPU: trimtab vs TRL on a ~0.5B random Llama, bf16.

Issue 21's measurement on an NVIDIA H200 (../shared/gpu-check/, 2026-12-04), reproducible with one
command: a Llama of hidden 1024, 24 layers, 16 heads of 64, MLP 4096, random weights from a fixed seed
(the real model's 49k-token tokenizer, so the LM head is as wide as a real one's), rows of ~128 prompt
and ~384 completion tokens (words drawn from that tokenizer's vocabulary; both sides tokenize the same
text into the same sequences), DPO at 16 pairs and KTO at 32 examples a step in one micro-batch,
bfloat16 on CUDA with nccl (both sides: float32 masters under autocast, trimtab at one rank as `shard_model` says),
reference log-probs precomputed on both sides.

Each side and algorithm trains in a process of its own, a torchrun-style single rank on the configured
backend (as `trimtab learn` runs under torchrun), so one side's CUDA memory, caches and process group
never reach the other's; the sides alternate `rounds` times and each side's best run counts, as in
`bench.learner`, whose rows (steps only, with the reference pass, and achieved FLOP/s against a bf16
matmul: the MFU proxy) these reuse.

`bench.learner` adds these rows when torch sees a CUDA device. `TRIMTAB_BENCH_GPU_TINY=1` runs the same
code at toy sizes on the CPU (float32, gloo), which is how it is checked on machines without a GPU.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from bench.learner import (
    ALGORITHMS,
    Geometry,
    Measured,
    Row,
    Throughput,
    _params,
    _span,
    bench_examples,
    best,
    example_work,
)
from trimtab.config import TrimtabConfig
from trimtab.ports import free_port

TINY_ENV = "TRIMTAB_BENCH_GPU_TINY"
# The real model `make real-model` imports: its tokenizer gives the vocabulary (the default model's has
# under a thousand tokens, which would make the LM head a rounding error).
TOKENIZER = Path(__file__).resolve().parent.parent / ".trimtab" / "models" / "smollm2-135m-instruct"


@dataclass(frozen=True)
class Shape:
    hidden: int
    layers: int
    heads: int
    head_dim: int
    intermediate: int
    prompt_words: tuple[int, int]  # inclusive; one token a word
    completion_words: tuple[int, int]
    batch: dict[str, int]  # per algorithm: examples a step, all in one micro-batch
    max_length: int
    device: str
    dtype: str
    backend: str
    warmup: int
    timed: int


FULL = Shape(
    hidden=1024,
    layers=24,
    heads=16,
    head_dim=64,
    intermediate=4096,
    prompt_words=(108, 140),
    completion_words=(351, 415),
    batch={"dpo": 16, "kto": 32},
    max_length=1024,
    device="cuda",
    dtype="bfloat16",
    backend="nccl",
    warmup=5,
    timed=20,
)
TINY = Shape(
    hidden=64,
    layers=2,
    heads=2,
    head_dim=32,
    intermediate=128,
    prompt_words=(6, 10),
    completion_words=(12, 20),
    batch={"dpo": 4, "kto": 4},
    max_length=128,
    device="cpu",
    dtype="float32",
    backend="gloo",
    warmup=1,
    timed=2,
)


def wanted() -> bool:
    """Whether `bench.learner` runs this geometry: on a CUDA machine, or forced tiny on the CPU."""
    return torch.cuda.is_available() or os.environ.get(TINY_ENV) == "1"


def shape() -> Shape:
    return TINY if os.environ.get(TINY_ENV) == "1" else FULL


def measure_gpu(
    config: TrimtabConfig, rounds: int, tmp: Path, algorithms: Sequence[str] = ALGORITHMS
) -> list[Measured]:
    """Both sides of each algorithm, at `shape()`; every run in a process of its own."""
    geometry_shape = shape()
    if not TOKENIZER.is_dir():
        raise FileNotFoundError(f"{TOKENIZER} is missing: run `make real-model` (its tokenizer sizes the LM head)")
    model_dir = build_model(geometry_shape, tmp / "gpu-model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    measured = []
    for algorithm in algorithms:
        geometry = gpu_geometry(config, geometry_shape, model_dir, algorithm)
        train = geometry.config.learner.train
        rows = long_rows(
            tokenizer, algorithm, train.batch_size * (geometry_shape.warmup + geometry.timed), geometry_shape
        )
        workdir = tmp / f"gpu-{algorithm}"
        workdir.mkdir()
        (workdir / "rows.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        (workdir / "config.json").write_text(geometry.config.model_dump_json())
        ours: list[Throughput] = []
        theirs: list[Throughput] = []
        for round_ in range(rounds):
            ours.append(_run_side("trimtab", algorithm, geometry_shape.warmup, geometry.timed, workdir, round_))
            theirs.append(_run_side("trl", algorithm, geometry_shape.warmup, geometry.timed, workdir, round_))
        work = example_work(model_dir, bench_examples(geometry.config, workdir / "rows.jsonl", algorithm), algorithm)
        measured.append(Measured(geometry, algorithm, best(ours), best(theirs), work, _span(ours, theirs)))
    return measured


def build_model(geometry_shape: Shape, out: Path, seed: int = 0) -> Path:
    """A random Llama of `geometry_shape` with the real model's tokenizer, float32 on disk."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    model_config = AutoConfig.from_pretrained(TOKENIZER)
    model_config.update(
        {
            "hidden_size": geometry_shape.hidden,
            "intermediate_size": geometry_shape.intermediate,
            "num_hidden_layers": geometry_shape.layers,
            "num_attention_heads": geometry_shape.heads,
            "num_key_value_heads": geometry_shape.heads,
            "head_dim": geometry_shape.head_dim,
            "max_position_embeddings": max(geometry_shape.max_length, 2048),
            "vocab_size": len(tokenizer),
        }
    )
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(model_config, dtype=torch.float32).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def gpu_geometry(config: TrimtabConfig, geometry_shape: Shape, model_dir: Path, algorithm: str) -> Geometry:
    learner = config.learner
    batch = geometry_shape.batch[algorithm]
    train = learner.train.model_copy(
        update={"batch_size": batch, "micro_batch_size": batch, "max_length": geometry_shape.max_length}
    )
    learner = learner.model_copy(
        update={
            "train": train,
            "device": geometry_shape.device,
            "dtype": geometry_shape.dtype,
            "backend": geometry_shape.backend,
        }
    )
    changed = config.model_copy(
        update={"model": config.model.model_copy(update={"path": model_dir.resolve()}), "learner": learner}
    )
    label = f"Llama, {_params(model_dir)} params (hidden {geometry_shape.hidden}, {geometry_shape.layers} layers)"
    return Geometry(label, changed, geometry_shape.timed)


def long_rows(tokenizer: Any, algorithm: str, n: int, geometry_shape: Shape, seed: int = 11) -> list[Row]:
    """`n` rows of random words of the tokenizer's vocabulary (each one token), at the shape's lengths."""
    words = sorted(token[1:] for token in tokenizer.get_vocab() if re.fullmatch(r"Ġ[a-z]{3,}", token))
    rng = random.Random(f"{seed}:bench-learner-gpu:{algorithm}")

    def text(lengths: tuple[int, int]) -> str:
        return " ".join(rng.choice(words) for _ in range(rng.randint(*lengths)))

    rows: list[Row] = []
    for i in range(n):
        prompt = [{"role": "user", "content": text(geometry_shape.prompt_words)}]
        if algorithm == "kto":
            rows.append({"prompt": prompt, "completion": text(geometry_shape.completion_words), "label": i % 2 == 0})
        else:
            chosen, rejected = text(geometry_shape.completion_words), text(geometry_shape.completion_words)
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows


def _run_side(side: str, algorithm: str, warmup: int, timed: int, workdir: Path, round_: int) -> Throughput:
    """One side's run in a child process (`main` below); its Throughput comes back as JSON."""
    out = workdir / f"{side}-{round_}.json"
    env = dict(os.environ)
    if side == "trimtab":  # a torchrun-style single rank: init_distributed joins the configured backend
        env |= {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}
        env["MASTER_PORT"] = str(free_port())
    argv = [sys.executable, "-m", "bench.learner_gpu", side, algorithm, str(warmup), str(timed), str(workdir), str(out)]
    print(f"bench: learner at the GPU geometry, {side} {algorithm} (round {round_ + 1})", file=sys.stderr, flush=True)
    done = subprocess.run(argv, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {side} {algorithm} run at the GPU geometry failed (exit {done.returncode})")
    return Throughput(**json.loads(out.read_text()))


def main(argv: list[str]) -> int:
    """The child: `python -m bench.learner_gpu SIDE ALGORITHM WARMUP TIMED WORKDIR OUT`."""
    from bench.learner import trimtab_throughput, trl_throughput

    side, algorithm, warmup, timed, workdir, out = argv
    config = TrimtabConfig.model_validate_json((Path(workdir) / "config.json").read_text())
    rows_path = Path(workdir) / "rows.jsonl"
    if side == "trimtab":
        result = trimtab_throughput(config, rows_path, algorithm, int(warmup), int(timed))
    else:
        rows = [json.loads(line) for line in rows_path.read_text().splitlines()]
        result = trl_throughput(config, rows, algorithm, int(warmup), int(timed), Path(workdir) / "trl-output")
    Path(out).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
