"""Alignment quality on the synthetic world: offline DPO, IPO and KTO on simulated feedback.

1. The default model answers `n_prompts` training-split prompts twice (vLLM, T=1); simulated users
   from the world's population judge them (`trimtab.simulation.feedback`): pairs for DPO and IPO,
   thumbs for KTO.
2. `trimtab learn` (learner.offline.run_learn) trains each algorithm from the default model into a
   temporary registry, with the settings of `ALGORITHMS`.
3. Each version is evaluated against the default model on held-out prompts (`learner.evaluate`):
   mean gold reward of greedy answers, KL(policy || default) on policy samples, pairwise win rate.

One row per algorithm: its win rate against the default model, whose own win rate against itself is
0.5 by definition, so the ratio is 2 x win rate; the gold rewards, KL and settings are in the notes.
`make bench` runs it with the others; alone, with another size:

    python -m bench.alignment --prompts 800 --heldout 256     # -> bench/results/alignment/latest.md
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from learner.evaluate import Evaluation, evaluate_versions, vllm_engine
from learner.offline import LearnRequest, run_learn
from trimtab.config import TrimtabConfig
from trimtab.config.learner import LearnerConfig
from trimtab.environment import apply_runtime_env
from trimtab.registry import Registry
from trimtab.simulation.evaluation import GoldSummary, heldout_prompts, messages_of, score_answers
from trimtab.simulation.feedback import FeedbackData, simulate_feedback
from trimtab.simulation.suite import gold_scorer
from trimtab.simulation.world import Prompt, World


@dataclass(frozen=True)
class AlgorithmSettings:
    """What one algorithm's run changes in the learner config (validated against its sections)."""

    algorithm: str
    epochs: int
    optim: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)

    def learner(self, base: LearnerConfig) -> LearnerConfig:
        def merged(section: Any, update: dict[str, Any]) -> Any:
            return type(section).model_validate(section.model_dump() | update)

        return base.model_copy(
            update={
                "optim": merged(base.optim, self.optim),
                "loss": merged(base.loss, self.loss),
                "train": merged(base.train, {"epochs": self.epochs, **self.train}),
            }
        )

    def describe(self) -> str:
        items = {**self.loss, **self.optim, "epochs": self.epochs, **self.train}
        return ", ".join(
            f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}" for key, value in items.items()
        )


# Tuned on the default model, evaluated on 512 held-out prompts, each setting on two data seeds (the
# bench's own seed, 3, was not among them). What decides the held-out greedy reward is mostly whether
# the first answer token flips to a polite opener: the default model puts ~29% on the three polite
# openers but at most ~11% on any one, against ~15% on the neutral "The", so greedy answers are rarely
# polite (22-27%), and a run that moves the polite mass only a little flips them on one data seed and
# not on another. Hence the settings aim for a move large enough to be robust, at a small KL:
# - 1600 prompts (about 1350 pairs) and one pass at lr 1e-4, batch 16 (84-100 steps, ~1 min each):
#   every algorithm gained on both seeds (DPO +0.77 / +0.74, IPO +0.35 / +0.68, KTO +0.49 / +0.98
#   reward; KL 0.5-1.7 nats/seq). With 800 prompts the same budget gave -0.02 to +0.90 by seed
#   (e.g. DPO at lr 1e-4: +0.23 / -0.02; two passes at 5e-5: +0.46 / +0.17; IPO +0.06 / +0.05).
# - lr 2e-4 and up is unstable: the training loss rose (IPO above its start of 1.0; DPO at 3e-4 above
#   log 2, both implicit rewards falling); on a fresh seed IPO at 2e-4 lowered the reward (-0.31).
# - DPO beta 0.1 (the paper's); 0.5 changed nothing measurable (margins stay far from saturating).
# - IPO tau 0.5: the per-token margin it regresses onto is 1/(2 tau) = 1 nat. At tau 0.1 (a 5-nat
#   target) the loss sat near 25 and every step was clipped.
# - KTO beta 0.1, desirable weight 3: about 25% of thumbs are up, and the paper advises
#   lambda_D n_D / (lambda_U n_U) in [1, 4/3]. At weight 1 KTO gained less than half as much; two
#   passes at 5e-5 over thumbs on both answers of each pair drifted to KL 24 nats/seq.
# - micro-batch 16 = the batch: one forward per step, nothing to accumulate at this size.
OPTIM = {"lr": 1e-4, "warmup_steps": 5}
BATCH = {"batch_size": 16, "micro_batch_size": 16}
ALGORITHMS: tuple[AlgorithmSettings, ...] = (
    AlgorithmSettings("dpo", 1, OPTIM, {"dpo_beta": 0.1}, BATCH),
    AlgorithmSettings("ipo", 1, OPTIM, {"ipo_tau": 0.5}, BATCH),
    AlgorithmSettings("kto", 1, OPTIM, {"kto_beta": 0.1, "kto_desirable_weight": 3.0}, BATCH),
)
PROMPTS = 1600  # training prompts, two answers each (see above: 800 was too few for a robust gain)
HELDOUT = 512  # held-out prompts; greedy answers are cheap, and fewer leave the win rate noisy
SEED = 3  # data and held-out draw; not one the settings were tuned on


@dataclass(frozen=True)
class TrainedVersion:
    settings: AlgorithmSettings
    path: Path
    examples: int
    seconds: float


def bench_alignment(
    config: TrimtabConfig,
    n_prompts: int = PROMPTS,
    heldout: int = HELDOUT,
    algorithms: tuple[AlgorithmSettings, ...] = ALGORITHMS,
    seed: int = SEED,
) -> list[Comparison]:
    """Simulated feedback on `n_prompts` training prompts -> DPO, IPO, KTO -> evaluation on `heldout`."""
    world = World(config.world)
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-alignment-") as scratch:
        started = time.perf_counter()
        with vllm_engine(config.model.path, config.engine) as llm:
            data = simulate_feedback(llm, world, n_prompts, seed)
        files = data.write(Path(scratch) / "data")
        data_seconds = time.perf_counter() - started
        trained = train_versions(config, files, Path(scratch) / "registry", algorithms)
        started = time.perf_counter()
        versions = {name: version.path for name, version in trained.items()}
        prompts = heldout_prompts(world, heldout, seed)
        evaluations = evaluate_versions(
            versions, config.model.path, messages_of(prompts), gold_scorer(world), config.engine, seed
        )
        eval_seconds = time.perf_counter() - started
    timing = f"data {data_seconds:.0f}s ({n_prompts} prompts x 2 answers), evaluation {eval_seconds:.0f}s"
    return [_row(trained[name], evaluations[name], Scored(world, prompts), data, timing) for name in trained]


@dataclass(frozen=True)
class Scored:
    """The held-out prompts of the world, whose gold flags explain an evaluation's rewards."""

    world: World
    prompts: list[Prompt]

    def summary(self, answers: tuple[str, ...]) -> GoldSummary:
        return GoldSummary.of(score_answers(self.world, self.prompts, answers))


def train_versions(
    config: TrimtabConfig, files: Mapping[str, Path], registry_root: Path, algorithms: tuple[AlgorithmSettings, ...]
) -> dict[str, TrainedVersion]:
    """Each algorithm trained from the default model on its data file, published into `registry_root`."""
    trained = {}
    registry = Registry(registry_root)
    for settings in algorithms:
        run_config = config.model_copy(
            update={
                "learner": settings.learner(config.learner),
                "registry": config.registry.model_copy(update={"root": registry_root}),
            }
        )
        request = LearnRequest(settings.algorithm, files[settings.algorithm], config.model.path, steps=None)
        started = time.perf_counter()
        result = run_learn(run_config, request, Console(file=io.StringIO()))
        assert result.version_id is not None  # one process: rank 0
        examples = len(files[settings.algorithm].read_text().splitlines())
        seconds = time.perf_counter() - started
        trained[settings.algorithm] = TrainedVersion(settings, registry.path(result.version_id), examples, seconds)
    return trained


def _row(
    version: TrainedVersion, evaluation: Evaluation, scored: Scored, data: FeedbackData, timing: str
) -> Comparison:
    name = version.settings.algorithm.upper()
    gold, reference = scored.summary(evaluation.answers), scored.summary(evaluation.reference_answers)
    kind = "thumbs" if version.settings.algorithm == "kto" else "pairs"
    return Comparison(
        name=f"{name} on {version.examples} simulated {kind}: held-out greedy answers vs the default model's",
        unit="% wins",
        candidate=name,
        candidate_value=100 * evaluation.win_rate,
        baseline="default model",
        baseline_value=50.0,  # any model against itself: every comparison a tie, counted 1/2
        notes=(
            f"gold reward {reference.mean_reward:+.2f} -> {gold.mean_reward:+.2f} "
            f"({evaluation.reward_gain:+.2f} ± {evaluation.reward_gain_stderr:.2f}) "
            f"on {evaluation.prompts} prompts; KL {evaluation.kl.mean:.2f} ± {evaluation.kl.stderr:.2f} nats/seq; "
            f"correct {reference.rates['correct']:.0%} -> {gold.rates['correct']:.0%}, "
            f"polite {reference.rates['polite']:.0%} -> {gold.rates['polite']:.0%}, "
            f"well-formed {gold.rates['well_formed']:.0%}; {version.settings.describe()}; "
            f"training {version.seconds:.0f}s; {timing}; {data.ties} ties dropped"
        ),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=PROMPTS, help="training prompts, two answers each")
    parser.add_argument("--heldout", type=int, default=HELDOUT, help="held-out prompts evaluated")
    parser.add_argument("--seed", type=int, default=SEED, help="seed of the data and of the held-out draw")
    args = parser.parse_args()
    apply_runtime_env()
    rows = bench_alignment(simulation_config(), args.prompts, args.heldout, seed=args.seed)
    table = write_report(rows, Path(__file__).resolve().parent / "results" / "alignment")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
