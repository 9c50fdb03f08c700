"""`make bench`: run every benchmark and write bench/results/latest.md (and .json)."""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from bench.alignment import bench_alignment
from bench.feedback import bench_feedback
from bench.generation import bench_generation
from bench.guardrails import bench_guardrails
from bench.learner import bench_learner
from bench.loop import bench_loop
from bench.report import write_report
from bench.rl import bench_rl
from bench.serving import bench_serving
from bench.simulation import simulation_config
from bench.steerlm import bench_steerlm
from trimtab.config import ConfigError
from trimtab.environment import apply_runtime_env

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    apply_runtime_env()  # also when run as `python -m bench`, not only through `make bench`
    console = Console(stderr=True)
    try:
        config = simulation_config()
    except ConfigError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    console.print("bench: generation throughput (vLLM vs HF generate)")
    rows = [bench_generation(config)]
    rows += bench_feedback(config)  # feedback ingestion: full service vs a bare producer
    console.print("bench: serving tier vs bare engine; hot swap vs engine restart")
    rows += bench_serving(config)
    console.print("bench: guardrails on vs off (same server and load); latency added by each rail")
    rows += bench_guardrails(config)
    console.print("bench: offline DPO and KTO training throughput (trimtab learner vs TRL)")
    rows += bench_learner(config)
    console.print("bench: GRPO step (trimtab vs TRL GRPOTrainer), rollouts (vLLM vs HF generate), refit vs restart")
    rows += bench_rl(config)
    console.print("bench: alignment quality (offline DPO, IPO, KTO on simulated feedback vs the default model)")
    rows += bench_alignment(config)
    console.print("bench: SteerLM attribute steering (asked attributes vs measured gold attributes)")
    rows += bench_steerlm(config)
    console.print("bench: the closed loop (a short demo): freshness, reward gain per learner CPU minute vs batch")
    rows += bench_loop(config)
    table = write_report(rows, RESULTS)
    print(table.read_text())
    console.print(f"written to {table}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
