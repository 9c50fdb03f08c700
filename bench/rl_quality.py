"""RL quality on the simulation, with the world's gold reward r* as the (verifiable) reward.

1. The frontier (the DPO paper's comparison): from the same training prompts and the same budget of
   sampled answers, PPO, GRPO and RLOO (`trimtab learn --algo ...`, learner.rl) and DPO (pairs of the
   default model's own answers labelled by r*: the chosen answer is the one r* scores higher, ties
   dropped), each at two KL strengths; every policy against the default model on held-out prompts:
   mean r* of greedy answers and KL(policy || default) per sequence (`learner.evaluate`).
2. Arithmetic: GRPO on the world's single-digit sums alone, r* as the reward (a correct sum is worth
   2 of its points); the share of held-out sums answered correctly (greedy) before and after.

    python -m bench.rl_quality        # -> bench/results/rl_quality/latest.md (about 12 minutes on 2 cores)

Budget: `STEPS` steps of 8 prompts x 4 answers = 960 sampled answers per RL run; DPO gets the same 960
(480 prompts x 2 answers). Rows compare each policy with the default model on the held-out prompts (the
ratio of their mean r* shifted by the world's minimum, so that it is positive: (r + 9) / (r_0 + 9));
the notes carry r*, the KL and the settings.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from bench.report import Comparison, write_report
from bench.simulation import simulation_config
from learner.evaluate import evaluate_versions, vllm_engine
from learner.offline import LearnRequest, run_learn
from learner.rl.loop import RLRequest, run_rl
from trimtab.config import TrimtabConfig
from trimtab.environment import apply_runtime_env
from trimtab.registry import Registry
from trimtab.simulation.evaluation import GoldSummary, heldout_prompts, messages_of, score_answers
from trimtab.simulation.feedback import sample_answer_pairs
from trimtab.simulation.suite import gold_scorer
from trimtab.simulation.world import MIN_REWARD, Family, Prompt, Split, World

GOLD = "trimtab.simulation.suite:gold_reward"
STEPS = 30  # x 32 sampled answers = 960 per RL run
ARITHMETIC_STEPS = 60
HELDOUT = 256
SEED = 5
KL_COEFS = (0.02, 0.2)  # beta of the RL runs; DPO's beta takes the same two values' role below
DPO_BETAS = (0.1, 0.5)
LR = 3e-4  # RL (tests/learner/test_rl.py's); DPO keeps bench.alignment's 1e-4 (higher was unstable there)


@dataclass(frozen=True)
class Policy:
    name: str
    path: Path
    settings: str


def bench_rl_quality(config: TrimtabConfig) -> list[Comparison]:
    world = World(config.world)
    with tempfile.TemporaryDirectory(prefix="trimtab-bench-rl-quality-") as scratch:
        work = Path(scratch)
        prompts = world.sample_prompts(2000, seed=SEED, split=Split.TRAIN)
        policies = [
            *rl_policies(config, work, prompts, ("ppo", "grpo", "rloo")),
            *dpo_policies(config, work, prompts[: STEPS * 8 * 2]),
        ]
        rows = frontier(config, world, policies)
        rows.append(arithmetic(config, world, work))
    return rows


def rl_policies(config: TrimtabConfig, work: Path, prompts: list[Prompt], algorithms: tuple[str, ...]) -> list[Policy]:
    prompts_file = write_prompts(work / "prompts.jsonl", prompts)
    found = []
    for algorithm in algorithms:
        for kl_coef in KL_COEFS:
            run = _with(config, work / f"{algorithm}-{kl_coef}", kl_coef=kl_coef)
            found.append(_rl(run, algorithm, prompts_file, STEPS, f"beta {kl_coef:g}"))
    return found


def dpo_policies(config: TrimtabConfig, work: Path, prompts: list[Prompt]) -> list[Policy]:
    world = World(config.world)
    with vllm_engine(config.model.path, config.engine) as llm:
        answers = sample_answer_pairs(llm, prompts, seed=SEED)
    rows = []
    for pair in answers:
        first, second = (world.score_prompt(pair.prompt, text).reward for text in (pair.first, pair.second))
        if first != second and pair.first and pair.second:
            chosen, rejected = (pair.first, pair.second) if first > second else (pair.second, pair.first)
            rows.append({"prompt": pair.prompt.text, "chosen": chosen, "rejected": rejected})
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    found = []
    for beta in DPO_BETAS:
        run = _with(config, work / f"dpo-{beta}")
        learner = run.learner.model_copy(
            update={
                "loss": run.learner.loss.model_copy(update={"dpo_beta": beta}),
                "optim": run.learner.optim.model_copy(update={"lr": 1e-4, "warmup_steps": 5}),
                "train": run.learner.train.model_copy(update={"batch_size": 16, "micro_batch_size": 16}),
            }
        )
        result = run_learn(
            run.model_copy(update={"learner": learner}),
            LearnRequest("dpo", data, config.model.path, steps=None),
            Console(file=io.StringIO()),
        )
        assert result.version_id is not None
        path = Registry(run.registry.root).path(result.version_id)
        found.append(Policy("dpo", path, f"beta {beta:g}, {len(rows)} pairs from 960 answers"))
    return found


def frontier(config: TrimtabConfig, world: World, policies: list[Policy]) -> list[Comparison]:
    held_out = heldout_prompts(world, HELDOUT, seed=SEED)
    by_key = {f"{p.name} {p.settings}": p for p in policies}
    policies_by_key = {key: p.path for key, p in by_key.items()}
    scorer = gold_scorer(world)
    evaluations = evaluate_versions(policies_by_key, config.model.path, messages_of(held_out), scorer, config.engine)
    rows = []
    for key, evaluation in evaluations.items():
        rates = GoldSummary.of(score_answers(world, held_out, evaluation.answers)).rates
        rows.append(
            Comparison(
                name=f"gold reward vs KL, same prompts and 960 sampled answers: {key}",
                unit="r* - min",
                candidate=by_key[key].name.upper(),
                candidate_value=evaluation.mean_reward - MIN_REWARD,
                baseline="default model",
                baseline_value=evaluation.reference_mean_reward - MIN_REWARD,
                notes=(
                    f"r* {evaluation.reference_mean_reward:+.2f} -> {evaluation.mean_reward:+.2f} on {HELDOUT} held-out"
                    f" prompts (greedy); KL {evaluation.kl.mean:.2f} ± {evaluation.kl.stderr:.2f} nats/seq;"
                    f" wins {evaluation.win_rate:.0%}; polite {rates['polite']:.0%}, correct {rates['correct']:.0%}"
                ),
            )
        )
    return rows


def arithmetic(config: TrimtabConfig, world: World, work: Path) -> Comparison:
    sums = [p for p in world.sample_prompts(4000, seed=SEED, split=Split.TRAIN) if p.family is Family.ARITHMETIC]
    held_out = [p for p in heldout_prompts(world, 1500, seed=SEED) if p.family is Family.ARITHMETIC][:HELDOUT]
    run = _with(config, work / "grpo-sums")
    policy = _rl(run, "grpo", write_prompts(work / "sums.jsonl", sums), ARITHMETIC_STEPS, "sums only")
    evaluation = evaluate_versions(
        {"grpo": policy.path}, config.model.path, messages_of(held_out), gold_scorer(world), config.engine
    )["grpo"]
    after = GoldSummary.of(score_answers(world, held_out, evaluation.answers)).rates["correct"]
    before = GoldSummary.of(score_answers(world, held_out, evaluation.reference_answers)).rates["correct"]
    return Comparison(
        name=f"GRPO on single-digit sums, r* as a verifiable reward ({ARITHMETIC_STEPS} steps, {len(sums)} prompts)",
        unit="% correct",
        candidate="GRPO",
        candidate_value=100 * after,
        baseline="default model",
        baseline_value=max(100 * before, 0.1),  # a ratio against 0% would be infinite
        notes=(
            f"greedy answers to {len(held_out)} held-out sums; r* {evaluation.reference_mean_reward:+.2f} ->"
            f" {evaluation.mean_reward:+.2f}; KL {evaluation.kl.mean:.2f} nats/seq"
        ),
    )


def _with(config: TrimtabConfig, run_dir: Path, *, kl_coef: float | None = None) -> TrimtabConfig:
    rl = config.learner.rl
    if kl_coef is not None:
        rl = rl.model_copy(update={"kl": rl.kl.model_copy(update={"coef": kl_coef})})
    learner = config.learner.model_copy(
        update={"rl": rl, "optim": config.learner.optim.model_copy(update={"lr": LR}), "log_every_steps": 10}
    )
    registry = config.registry.model_copy(update={"root": run_dir / "registry"})
    return config.model_copy(update={"learner": learner, "registry": registry})


def _rl(config: TrimtabConfig, algorithm: str, prompts: Path, steps: int, settings: str) -> Policy:
    request = RLRequest(algorithm, prompts, GOLD, config.model.path, steps)
    result = run_rl(config, request, Console(file=io.StringIO()))
    assert result.version_id is not None
    return Policy(algorithm, Registry(config.registry.root).path(result.version_id), settings)


def write_prompts(path: Path, prompts: list[Prompt]) -> Path:
    path.write_text("".join(json.dumps({"prompt": p.text}) + "\n" for p in prompts))
    return path


def main() -> int:
    apply_runtime_env()
    rows = bench_rl_quality(simulation_config())
    table = write_report(rows, Path(__file__).resolve().parent / "results" / "rl_quality")
    print(table.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
