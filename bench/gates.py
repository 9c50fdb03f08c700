"""The online learner's gates, per round: its long-lived gates' worker vs a worker started for each round.

Both sides run the very same code (`learner.online.gates.Gates` on the default model, the world's
suite judged by its gold reward, as `make demo` runs it): candidate and current are full-weight copies
of the default model with seeded noise, the reference is the default model. The long-lived side starts
its worker once and is timed on ROUNDS judgements after a first one (a round's answers, samples, KL pass
and judging: what each round of the learner pays); the baseline starts a fresh worker for each of its
ROUNDS judgements and is timed from the start to the verdict (what every round paid before the worker
lived as long as the learner: vLLM's start, the reference's answers and model, the round's measures).
The two sides alternate, so a slow spell of the shared machine hits both.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from rich.console import Console

from bench.report import Comparison
from learner.online.gates import GateCandidate, Gates
from trimtab.config import TrimtabConfig
from trimtab.testing import perturbed_copy

ROUNDS = 3


def bench_gates(config: TrimtabConfig) -> Comparison:
    console = Console(stderr=True)
    gates_config = config.learner.online.gates.model_copy(update={"reward_judge": "suite"})
    online = config.learner.online.model_copy(update={"gates": gates_config})
    config = config.model_copy(update={"learner": config.learner.model_copy(update={"online": online})})
    reference = config.model.path
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-gates-") as scratch:
        work = Path(scratch)
        candidates = [
            GateCandidate(
                candidate_dir=perturbed_copy(reference, work / f"candidate-{i}", seed=i, scale=0.05),
                current_dir=perturbed_copy(reference, work / f"current-{i}", seed=100 + i, scale=0.05),
                anchor_loss_before=1.0,
                anchor_loss_after=1.0,
                reward_model_dir=None,
            )
            for i in range(ROUNDS)
        ]
        kept, fresh = [], []
        with Gates.started(config, reference, log=work / "kept.log") as gates:
            gates.judge(candidates[0])  # the worker's start and its first round, outside the timing
            for i, candidate in enumerate(candidates):
                started = time.perf_counter()
                with Gates.started(config, reference, log=work / f"fresh-{i}.log") as once:
                    once.judge(candidate)
                fresh.append(time.perf_counter() - started)
                started = time.perf_counter()
                gates.judge(candidate)
                kept.append(time.perf_counter() - started)
                console.print(f"gates round {i}: kept worker {kept[-1]:.1f} s, fresh worker {fresh[-1]:.1f} s")
    runs = ", ".join(f"{k:.1f}/{f:.1f}" for k, f in zip(kept, fresh, strict=True))
    return Comparison(
        name="online gates, seconds per round",
        unit="s",
        candidate="worker kept for the run",
        candidate_value=statistics.median(kept),
        baseline="worker started each round",
        baseline_value=statistics.median(fresh),
        higher_is_better=False,
        notes=f"median of {ROUNDS} rounds each, alternating; {gates_config.heldout_prompts} held-out prompts,"
        f" the world's gold reward as judge; each round kept/fresh: {runs} s",
    )
