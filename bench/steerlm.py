"""SteerLM on the synthetic world: asking for higher helpfulness / lower verbosity moves the gold scores.

1. Data: `n_examples` training-split prompts, each answered once in a random style of the world's mix
   (`World.render` with `World.sample_style`) and labelled with that answer's GOLD attributes
   (`trimtab.simulation.world.gold`), written as SteerLM JSONL {"prompt", "response", "attributes"}.
2. `trimtab learn --algo steerlm` (learner.offline.run_learn) from the default model into a temporary
   registry, with the settings of `SETTINGS`.
3. Greedy answers (vLLM, T=0) on held-out prompts: the SteerLM version's under each of `TARGETS`
   (the prompt conditioned with `trimtab.steerlm.with_attributes`, the format serving uses), and the
   default model's to the plain prompt. Every answer is scored by the gold judge.

Rows: per target, the mean gold helpfulness against the unconditioned default model's (its gold
verbosity in the notes); then the two claims as contrasts between targets: asking helpfulness 4
instead of 1 raises mean gold helpfulness (ratio > 1), asking verbosity 1 instead of 3 lowers mean
gold verbosity (lower is better, so ratio > 1 again). `make bench` runs it with the rest;
`python -m bench.steerlm` alone.
"""

from __future__ import annotations

import io
import json
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench.alignment import AlgorithmSettings
from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from learner.evaluate import MAX_TOKENS
from learner.generation import generate
from learner.offline import LearnRequest, run_learn
from trimtab.config import TrimtabConfig
from trimtab.config.registry import RegistryConfig
from trimtab.environment import apply_runtime_env
from trimtab.registry import Registry
from trimtab.simulation.evaluation import heldout_prompts, score_answers
from trimtab.simulation.world import GoldScore, Prompt, World
from trimtab.steerlm import with_attributes

# Only the two attributes this demonstration steers are labelled: the attribute system message stays
# short (the default tokenizer spells these words out in ~10 tokens each), and at inference we ask for
# exactly these two, so training on the other four would only teach the model to read prompts it is
# never given here.
STEERED = ("helpfulness", "verbosity")

# One pass over N_EXAMPLES fresh answers at the learner's default batch of 16: 600 steps, about 5 minutes
# on 2 cores. Measured on this bench (held-out log-probs and greedy answers under each target): after
# 200 steps (3,200 examples, ~1.5 minutes) the model ignores the attribute message entirely, at lr 1e-3
# and at 3e-3 alike (log-probs moved < 0.1 nats between targets); reading it is learned abruptly
# somewhere between 200 and 600 steps. 600 steps at batch 8 (2.5 minutes) learned verbosity but not
# helpfulness; 600 steps at batch 16 (3 epochs of 3,200) learned both. lr 1e-3: half the default model's SFT peak.
N_EXAMPLES = 9600
SETTINGS = AlgorithmSettings("steerlm", epochs=1, optim={"lr": 1e-3, "warmup_steps": 10})


@dataclass(frozen=True)
class Target:
    """The attribute scores asked for at inference."""

    helpfulness: int
    verbosity: int

    def attributes(self) -> dict[str, int]:
        return {"helpfulness": self.helpfulness, "verbosity": self.verbosity}

    def __str__(self) -> str:
        return f"helpfulness={self.helpfulness} verbosity={self.verbosity}"


# Helpfulness 1 vs 4 at verbosity 1 vs 3. Verbosity 1 (5-10 words), not 0: fewer than 2% of the
# world's answers have 4 words or fewer, so 0 is a target the data barely shows.
TARGETS = tuple(Target(h, v) for h in (1, 4) for v in (1, 3))


@dataclass(frozen=True)
class AttributeMeans:
    """Mean gold attributes of a set of greedy answers, and what they are made of."""

    helpfulness: float
    verbosity: float
    correct: float
    polite: float
    rambling: float
    words: float

    @classmethod
    def of(cls, scores: Sequence[GoldScore]) -> AttributeMeans:
        def mean(values: Sequence[float]) -> float:
            return sum(values) / len(values)

        return cls(
            helpfulness=mean([s.attributes.helpfulness for s in scores]),
            verbosity=mean([s.attributes.verbosity for s in scores]),
            correct=mean([s.correct for s in scores]),
            polite=mean([s.polite for s in scores]),
            rambling=mean([s.rambling for s in scores]),
            words=mean([s.n_words for s in scores]),
        )

    def describe(self) -> str:
        return (
            f"verbosity {self.verbosity:.2f}, {self.words:.1f} words; correct {self.correct:.0%}, "
            f"polite {self.polite:.0%}, rambling {self.rambling:.0%}"
        )


def steerlm_records(world: World, n: int, seed: int) -> list[dict[str, object]]:
    """n SteerLM lines: a training prompt, an answer in a random style, its gold STEERED attributes."""
    rng = random.Random(f"{seed}:steerlm")
    records: list[dict[str, object]] = []
    for prompt in world.sample_prompts(n, seed):
        response = world.render(prompt, world.sample_style(rng), rng)
        gold = world.score_prompt(prompt, response).attributes.as_dict()
        records.append({"prompt": prompt.text, "response": response, "attributes": {a: gold[a] for a in STEERED}})
    return records


def write_jsonl(records: Sequence[dict[str, object]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


def train_steerlm(config: TrimtabConfig, data: Path, registry_root: Path) -> Path:
    """The SteerLM version trained from the default model on `data`, published into `registry_root`."""
    run_config = config.model_copy(
        update={"learner": SETTINGS.learner(config.learner), "registry": RegistryConfig(root=registry_root)}
    )
    request = LearnRequest("steerlm", data, config.model.path, steps=None)
    result = run_learn(run_config, request, Console(file=io.StringIO()))
    assert result.version_id is not None  # one process: rank 0
    return Registry(registry_root).path(result.version_id)


def steered_means(
    config: TrimtabConfig, model_dir: Path, world: World, prompts: Sequence[Prompt], seed: int
) -> dict[Target, AttributeMeans]:
    """Mean gold attributes of `model_dir`'s greedy answers under each target, from one vLLM child."""
    conversations = [with_attributes(p.messages, t.attributes()) for t in TARGETS for p in prompts]
    answers = generate(model_dir, conversations, config.engine, max_tokens=MAX_TOKENS, temperature=0.0, seed=seed)
    n = len(prompts)
    return {
        target: AttributeMeans.of(score_answers(world, prompts, answers[i * n : (i + 1) * n]))
        for i, target in enumerate(TARGETS)
    }


def bench_steerlm(
    config: TrimtabConfig, n_examples: int = N_EXAMPLES, heldout: int = 256, seed: int = 0
) -> list[Comparison]:
    """SteerLM on `n_examples` styled answers -> greedy answers on `heldout` prompts under each target."""
    world = World(config.world)
    prompts = heldout_prompts(world, heldout, seed)
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-steerlm-") as scratch:
        data = write_jsonl(steerlm_records(world, n_examples, seed), Path(scratch) / "steerlm.jsonl")
        started = time.perf_counter()
        version = train_steerlm(config, data, Path(scratch) / "registry")
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        default_answers = generate(
            config.model.path,
            [p.messages for p in prompts],
            config.engine,
            max_tokens=MAX_TOKENS,
            temperature=0.0,
            seed=seed,
        )
        default = AttributeMeans.of(score_answers(world, prompts, default_answers))
        steered = steered_means(config, version, world, prompts, seed)
        eval_seconds = time.perf_counter() - started
    timing = (
        f"{SETTINGS.describe()}, {n_examples} examples; training {train_seconds:.0f}s; "
        f"generation {eval_seconds:.0f}s ({len(prompts)} held-out prompts x {len(TARGETS) + 1})"
    )
    rows = [_target_row(target, steered[target], default, timing) for target in TARGETS]
    return rows + _claim_rows(steered, timing)


def _target_row(target: Target, means: AttributeMeans, default: AttributeMeans, timing: str) -> Comparison:
    return Comparison(
        name=f"SteerLM asked {target}: held-out greedy answers vs the default model's",
        unit="gold helpfulness",
        candidate=f"SteerLM, {target}",
        candidate_value=means.helpfulness,
        baseline="default model, no attributes",
        baseline_value=default.helpfulness,
        notes=f"SteerLM {means.describe()}; default {default.describe()}; {timing}",
    )


def _claim_rows(steered: dict[Target, AttributeMeans], timing: str) -> list[Comparison]:
    """Helpfulness 4 vs 1 and verbosity 1 vs 3, each averaged over the other attribute's targets."""

    def mean_over(attribute: str, asked: int, measured: str) -> float:
        values = [getattr(m, measured) for t, m in steered.items() if getattr(t, attribute) == asked]
        return sum(values) / len(values)

    return [
        Comparison(
            name="SteerLM: asking helpfulness 4 instead of 1 (mean over verbosity 1 and 3)",
            unit="gold helpfulness",
            candidate="asked 4",
            candidate_value=mean_over("helpfulness", 4, "helpfulness"),
            baseline="asked 1",
            baseline_value=mean_over("helpfulness", 1, "helpfulness"),
            notes=timing,
        ),
        Comparison(
            name="SteerLM: asking verbosity 1 instead of 3 (mean over helpfulness 1 and 4)",
            unit="gold verbosity",
            candidate="asked 1",
            candidate_value=mean_over("verbosity", 1, "verbosity"),
            baseline="asked 3",
            baseline_value=mean_over("verbosity", 3, "verbosity"),
            higher_is_better=False,
            notes=timing,
        ),
    ]


def main() -> int:
    """`python -m bench.steerlm`: this benchmark alone, written to bench/results/steerlm/."""
    apply_runtime_env()
    console = Console(stderr=True)
    console.print("bench: SteerLM attribute steering on the synthetic world")
    rows = bench_steerlm(simulation_config())
    table = write_report(rows, Path(__file__).resolve().parent / "results" / "steerlm")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
