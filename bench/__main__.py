"""`make bench`: run every benchmark (or `python -m bench NAME ...`: the named ones) and write
bench/results/latest.md (and .json)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from bench.alignment import bench_alignment
from bench.feedback import bench_feedback
from bench.gates import bench_gates
from bench.generation import bench_generation
from bench.guardrails import bench_guardrails
from bench.learner import bench_learner
from bench.lm_head import bench_lm_head
from bench.loop import bench_loop
from bench.openai import bench_openai
from bench.report import Comparison, write_report
from bench.rl import bench_rl
from bench.serving import bench_serving
from bench.simulation import simulation_config
from bench.steerlm import bench_steerlm
from trimtab.config import ConfigError, TrimtabConfig
from trimtab.environment import apply_runtime_env

RESULTS = Path(__file__).resolve().parent / "results"


BENCHES: dict[str, tuple[str, Callable[[TrimtabConfig], Comparison | list[Comparison]]]] = {
    "generation": ("generation throughput (vLLM vs HF generate)", bench_generation),
    "feedback": ("feedback ingestion: full service vs a bare producer", bench_feedback),
    "serving": ("serving tier vs bare engine; hot swap vs engine restart", bench_serving),
    "openai": ("the OpenAI endpoint vs vLLM's OpenAI server (same model and load)", bench_openai),
    "guardrails": ("guardrails on vs off (same server and load); latency added by each rail", bench_guardrails),
    "learner": ("offline DPO and KTO training throughput (trimtab learner vs TRL)", bench_learner),
    "lm_head": (
        "the learner's LM head from the first scored position vs every position (real model)",
        bench_lm_head,
    ),
    "rl": ("GRPO step (trimtab vs TRL GRPOTrainer), rollouts (vLLM vs HF generate), refit vs restart", bench_rl),
    "gates": ("the online gates per round: their worker kept for the run vs one started each round", bench_gates),
    "alignment": (
        "alignment quality (offline DPO, IPO, KTO on simulated feedback vs the default model)",
        bench_alignment,
    ),
    "steerlm": ("SteerLM attribute steering (asked attributes vs measured gold attributes)", bench_steerlm),
    "loop": ("the closed loop (a short demo): freshness, reward gain per learner CPU minute vs batch", bench_loop),
}


def main(argv: list[str] | None = None) -> int:
    """`python -m bench [NAME ...]`: every benchmark, or the named ones (NAME: a key of BENCHES)."""
    apply_runtime_env()  # also when run as `python -m bench`, not only through `make bench`
    console = Console(stderr=True)
    names = (sys.argv[1:] if argv is None else argv) or list(BENCHES)
    unknown = [name for name in names if name not in BENCHES]
    if unknown:
        print(f"bench: unknown benchmark {', '.join(unknown)} (known: {', '.join(BENCHES)})", file=sys.stderr)
        return 2
    try:
        config = simulation_config()
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    rows: list[Comparison] = []
    for name in names:
        what, run = BENCHES[name]
        console.print(f"bench: {what}")
        measured = run(config)
        rows += measured if isinstance(measured, list) else [measured]
    # A selection is written beside the full run's results, not over them.
    table = write_report(rows, RESULTS, "latest" if names == list(BENCHES) else "latest-" + "-".join(names))
    print(table.read_text())
    console.print(f"written to {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
