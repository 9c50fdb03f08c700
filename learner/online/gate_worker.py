"""The gates' evaluator: a worker process of rank 0 (`learner.worker_process`) that lives from the first
gated round to the online learner's end and holds what every round's gates need, so that a round pays
only for its own measures:

- one vLLM engine, started on the reference model with LoRA off; each side's full weights are loaded
  into it in place (an adapter is merged first), for the held-out answers and the red-team answers;
- the reference model's greedy answers and its transformers model (the KL pass's denominator);
- the suite and, with guardrails on, the rails and their embedder.

Before, each round started all of it anew in a child process: 22 s a round against 2.7 s now in
`python -m bench gates`, most of it vLLM's start, and more beside serving in `make demo`.

Run by `learner.online.gates.Gates` as `python -m learner.online.gate_worker SOCKET SETUP.json`
({"config", "reference"}); its one command, "evaluate" ({"candidate", "current", "reward_model"}),
answers the measured numbers.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from learner.evaluate import Evaluation, Reference, evaluate_on, full_weights_dir, judge_answers, vllm_engine, win_rate
from learner.online.suite_check import judge_dir
from learner.worker_process import listen, setup
from trimtab.config import TrimtabConfig
from trimtab.jsonl import Messages
from trimtab.suite import EvaluationSuite, Judge, load_suite

if TYPE_CHECKING:
    from vllm import LLM

    from guardrails.gate import GateResult
    from guardrails.runtime import Guardrails
    from trimtab.config.guardrails import GateConfig as GuardrailGateConfig
    from trimtab.suite import RedTeamPrompt


Scores = tuple[list[float], list[float], list[float]]  # candidate's, current's, the reference's answers


@dataclass
class Evaluator:
    config: TrimtabConfig
    suite: EvaluationSuite
    prompts: list[Messages]  # the held-out prompts the gates use
    llm: LLM
    reference: Reference
    rails: Guardrails | None  # with guardrails on

    def evaluate(self, request: dict[str, Any]) -> dict[str, float]:
        """The numbers of one round's gates: the candidate and current against the reference."""
        policies = {"candidate": Path(request["candidate"]), "current": Path(request["current"])}
        results = evaluate_on(self.llm, self.reference, policies, self.prompts, None)
        candidate, current = results["candidate"], results["current"]
        numbers = {
            "gate/heldout_prompts": float(len(self.prompts)),
            "gate/candidate_kl": candidate.kl.mean,
            "kl_to_reference": candidate.kl.mean,  # the key dashboards and the demo's report read
            "gate/current_kl": current.kl.mean,
        }
        judged = judged_scores(self.config, self.suite.judge, self.prompts, candidate, current)
        if judged is not None:
            ours, theirs, reference = judged
            numbers |= {
                "gate/candidate_reward": _mean(ours),
                "gate/current_reward": _mean(theirs),
                "gate/reward_difference_stderr": paired_stderr(ours, theirs),
                "gate/reference_reward": _mean(reference),
                "gate/candidate_win_rate_vs_reference": win_rate(ours, reference),
            }
        if request["reward_model"] is not None:
            numbers |= reward_model_numbers(Path(request["reward_model"]), self.prompts, candidate, current, judged)
        if self.rails is not None:
            numbers |= self._guardrail_numbers(policies["candidate"], policies["current"])
        return numbers

    def _guardrail_numbers(self, candidate_dir: Path, current_dir: Path) -> dict[str, float]:
        assert self.rails is not None
        with tempfile.TemporaryDirectory(prefix="trimtab-guardrail-gate-") as scratch:
            candidate = full_weights_dir(candidate_dir, Path(scratch) / "candidate")
            current = full_weights_dir(current_dir, Path(scratch) / "current")
            gate = self.config.guardrails.gate
            return guardrail_gate(self.llm, self.rails, self.suite.red_team, gate, candidate, current).metrics()


def guardrail_gate(
    llm: LLM,
    rails: Guardrails,
    red_team: Sequence[RedTeamPrompt],
    gate: GuardrailGateConfig,
    candidate_dir: Path,
    current_dir: Path,
) -> GateResult:
    """Current's and the candidate's answers to the red-team set from `llm` (full weights of each loaded
    in turn, same seeds), judged by the output rails (`guardrails.gate`)."""
    from guardrails.gate import evaluate_gate, red_team_prompts, respond
    from learner.evaluate import load_weights

    prompts = red_team_prompts(red_team, rails)
    load_weights(llm, current_dir)
    current = respond(llm, prompts, gate)
    load_weights(llm, candidate_dir)
    candidate = respond(llm, prompts, gate)
    return asyncio.run(evaluate_gate(rails, prompts, candidate, current, gate.max_violation_increase))


def judged_scores(
    config: TrimtabConfig, judge: Judge | None, prompts: Sequence[Messages], candidate: Evaluation, current: Evaluation
) -> Scores | None:
    """The suite judge's scores of each side's greedy answers (None: the suite has no judge)."""
    from learner.rewards import RewardModel

    sides = (candidate.answers, current.answers, candidate.reference_answers)
    if judge is None:
        return None
    if judge.scorer is not None:
        ours, theirs, reference = (judge_answers(judge.scorer, prompts, answers) for answers in sides)
    else:
        reward_model = RewardModel(judge_dir(config, judge))
        ours, theirs, reference = (reward_model(prompts, answers) for answers in sides)
    return ours, theirs, reference


def reward_model_numbers(
    reward_model: Path,
    prompts: Sequence[Messages],
    candidate: Evaluation,
    current: Evaluation,
    judged: Scores | None,
) -> dict[str, float]:
    """The reward model's mean score of each side's answers and, with a suite judge, how often it orders a
    prompt's two answers as that judge does (over the prompts the judge does not tie; NaN when all tie)."""
    from learner.rewards import RewardModel

    model = RewardModel(reward_model)
    ours, theirs = model(prompts, candidate.answers), model(prompts, current.answers)
    numbers = {
        "gate/candidate_rm_reward": _mean(ours),
        "gate/current_rm_reward": _mean(theirs),
        "gate/rm_reward_difference_stderr": paired_stderr(ours, theirs),
    }
    if judged is not None:
        judge_ours, judge_theirs, _ = judged
        ordered = [
            (a - b > 0) == (j_a - j_b > 0)
            for a, b, j_a, j_b in zip(ours, theirs, judge_ours, judge_theirs, strict=True)
            if j_a != j_b
        ]
        numbers["gate/reward_model_agreement"] = sum(ordered) / len(ordered) if ordered else math.nan
        numbers["gate/reward_model_agreement_prompts"] = float(len(ordered))  # what the agreement is a share of
    return numbers


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def paired_stderr(ours: Sequence[float], theirs: Sequence[float]) -> float:
    """The standard error of the mean of the per-prompt differences (NaN for fewer than two prompts)."""
    differences = [a - b for a, b in zip(ours, theirs, strict=True)]
    return statistics.stdev(differences) / math.sqrt(len(differences)) if len(differences) > 1 else math.nan


def load_rails(config: TrimtabConfig, suite: EvaluationSuite) -> Guardrails:
    """The output rails the guardrail gate judges with. Their embedder sets torch's thread count for its own
    sake; the process's count is put back, as the KL pass of every later round runs here too."""
    from guardrails.runtime import Guardrails
    from guardrails.semantic import Embedder
    from guardrails.service import config_dir

    settings = config.guardrails
    threads = torch.get_num_threads()
    embedder = Embedder(settings.device, settings.embedding_threads)
    torch.set_num_threads(threads)
    return Guardrails.load(config_dir(settings), embedder, suite.protected)


def main(argv: Sequence[str]) -> None:
    socket, settings = setup(argv)
    config = TrimtabConfig.model_validate(settings["config"])
    reference_dir = Path(settings["reference"])
    suite = load_suite(config)
    prompts = list(suite.heldout[: config.learner.online.gates.heldout_prompts])
    threads = torch.get_num_threads()
    with vllm_engine(reference_dir, config.engine, in_process=True) as llm:
        torch.set_num_threads(threads)  # vLLM's engine set one for itself; the KL pass runs here too
        reference = Reference.measured(llm, reference_dir, prompts)
        rails = load_rails(config, suite) if config.guardrails.enabled else None
        evaluator = Evaluator(config, suite, prompts, llm, reference, rails)
        listen(socket, {"evaluate": evaluator.evaluate})


if __name__ == "__main__":
    main(sys.argv)
