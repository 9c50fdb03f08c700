"""The offline gates a candidate passes before it may serve as the canary, on the evaluation suite
(`trimtab.suite`: the operator's held-out prompts, anchors, red team and judge).

- held-out reward: the candidate's greedy answers to the suite's held-out prompts score a mean reward
  not below current's by more than `reward_tolerance`, at `reward_confidence`: with d_i the candidate's
  reward minus current's on prompt i, refused only if mean(d) + z * stderr(d) < -reward_tolerance
  (z the normal quantile of the confidence; a paired bound, as both answer the same prompts). Current
  is the version that won its own gate, its held-out score the better draw of a noisy one; comparing
  plain means refused its descendants for differences the prompts cannot resolve (11 of 24 rounds of
  one demo in a row after a promotion). The judge (`gates.reward_judge`) is the
  learner's own reward model (the newest it published) or the suite's judge (a scorer function, a
  reward-model version; in the simulation, the world's gold reward). Every judge available is
  measured, and when both are, `gate/reward_model_agreement` says how often the reward model orders
  a prompt's two answers as the suite's judge does. A judge that is not ready (a reward model that has
  not yet trained on `reward_model.min_examples` new examples, a suite without one) judges nothing:
  the verdict notes it and this gate is not applied (the others, and the canary's live comparison,
  still are);
- KL: KL(candidate || reference model) (k1 estimate on the candidate's own T=1 samples,
  `learner.evaluate.kl_estimate`) within `max_kl`;
- anchor set: the round raised the suite's anchor demonstrations' SFT loss by at most
  `max_anchor_regression`;
- guardrail violations (only when `guardrails.enabled`): the candidate's answers to the red-team set
  break the output rails at most `guardrails.gate.max_violation_increase` more often than current's
  (`guardrails.gate`; its numbers are the `guardrails.*` metrics).

The evaluation runs in a worker process that lives from the first gated round to the learner's end
(`Gates`, on rank 0; `learner.online.gate_worker`), which keeps one vLLM engine and the reference side
for every round.
Every number goes into the published version's manifest metrics.

    with Gates.started(config, reference_dir, log=checkpoint_dir / "gates.log") as gates:
        verdict = gates.judge(candidate, should_stop=stop.is_set)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

from learner.worker_process import WorkerProcess
from trimtab.config import TrimtabConfig, handoff


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    numbers: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was not judged, and why


@dataclass(frozen=True)
class GateCandidate:
    """What the gates compare: the candidate and what serves now (the reference, the model KL is measured
    against, is the run's: `Gates.started`)."""

    candidate_dir: Path
    current_dir: Path
    anchor_loss_before: float  # the anchor set's SFT loss before the round (nats/token)
    anchor_loss_after: float
    reward_model_dir: Path | None  # the learner's reward model, once ready to judge


# The held-out reward numbers of each judge: candidate's mean, current's, the paired difference's stderr.
JUDGE_KEYS = {
    "suite": ("gate/candidate_reward", "gate/current_reward", "gate/reward_difference_stderr"),
    "reward_model": ("gate/candidate_rm_reward", "gate/current_rm_reward", "gate/rm_reward_difference_stderr"),
}


@dataclass
class Gates:
    """The gates of one learner run: their worker, started by the first round that gates (a start beside
    training would slow both: on a CPU each process's threads then fight for the cores), judges every
    round's candidate and is stopped when the run ends."""

    config: TrimtabConfig
    reference_dir: Path
    log: Path
    resources: contextlib.ExitStack
    worker: WorkerProcess | None = None

    @classmethod
    @contextlib.contextmanager
    def started(cls, config: TrimtabConfig, reference_dir: Path, *, log: Path) -> Iterator[Gates]:
        """The gates against `reference_dir`; their worker, once started, is stopped on exit."""
        with contextlib.ExitStack() as resources:
            yield cls(config, reference_dir, log, resources)

    def judge(self, candidate: GateCandidate, should_stop: Callable[[], bool] = lambda: False) -> GateVerdict:
        """The verdict on `candidate.candidate_dir`; `should_stop` is polled meanwhile (a stop raises
        `learner.generation.Interrupted`)."""
        numbers = {
            "gate/anchor_loss_before": candidate.anchor_loss_before,
            "gate/anchor_loss_after": candidate.anchor_loss_after,
        }
        if not self.config.learner.online.gates.enabled:
            return GateVerdict(True, [], numbers)
        request = {
            "candidate": str(candidate.candidate_dir),
            "current": str(candidate.current_dir),
            "reward_model": None if candidate.reward_model_dir is None else str(candidate.reward_model_dir),
        }
        measured: dict[str, float] = self._worker().call("evaluate", request, should_stop)
        return verdict(self.config, numbers | measured)

    def _worker(self) -> WorkerProcess:
        if self.worker is None:
            setup = {"config": handoff(self.config), "reference": str(self.reference_dir)}
            started = WorkerProcess.started(
                "learner.online.gate_worker", setup, name="the gates' evaluator", log=self.log
            )
            self.worker = self.resources.enter_context(started)
        return self.worker


def verdict(config: TrimtabConfig, numbers: dict[str, float]) -> GateVerdict:
    """The decision on the measured numbers (the anchor losses and the worker's measures)."""
    gates = config.learner.online.gates
    reasons, notes = [], []
    candidate_key, current_key, stderr_key = JUDGE_KEYS[gates.reward_judge]
    judge = "suite-judged reward" if gates.reward_judge == "suite" else "reward-model reward"
    if candidate_key in numbers:
        drop = numbers[current_key] - numbers[candidate_key]
        stderr = numbers.get(stderr_key, 0.0)
        margin = NormalDist().inv_cdf(gates.reward_confidence) * (stderr if math.isfinite(stderr) else 0.0)
        if drop - margin > gates.reward_tolerance:
            reasons.append(
                f"held-out {judge} {drop:.3f} below current's, more than the tolerance {gates.reward_tolerance}"
                f" at {gates.reward_confidence:.0%} (stderr {stderr:.3f})"
            )
    elif gates.reward_judge == "reward_model":
        notes.append(
            f"held-out reward not judged: the reward model has not yet trained on"
            f" {config.learner.online.reward_model.min_examples} new examples"
        )
    else:
        notes.append("held-out reward not judged: the suite has no judge (suite.judge)")
    if numbers["gate/candidate_kl"] > gates.max_kl:
        reasons.append(f"KL to reference {numbers['gate/candidate_kl']:.2f} over {gates.max_kl}")
    rise = numbers["gate/anchor_loss_after"] - numbers["gate/anchor_loss_before"]
    if rise > gates.max_anchor_regression:
        reasons.append(f"anchor-set loss rose {rise:.3f} nats/token (bound {gates.max_anchor_regression})")
    if config.guardrails.enabled and not numbers["guardrails.passed"]:
        reasons.append(
            f"guardrail violation rate {numbers['guardrails.violation_rate']:.3f} vs current's "
            f"{numbers['guardrails.current_violation_rate']:.3f} (bound +{numbers['guardrails.bound']:g})"
        )
    return GateVerdict(not reasons, reasons, numbers, notes)
