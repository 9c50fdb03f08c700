"""The offline gates a candidate passes before it may serve as the canary.

- held-out reward: the candidate's greedy answers to held-out prompts score a mean gold reward (the
  synthetic world's judge) not below current's by more than `reward_tolerance`;
- KL: KL(candidate || reference model) (k1 estimate on the candidate's own T=1 samples,
  `learner.evaluate.kl_estimate`) within `max_kl`;
- anchor set: the round raised the anchor demonstrations' SFT loss by at most `max_anchor_regression`.

The evaluation runs vLLM, in a child process (`python -m learner.online.gates`) for the reasons given
in `learner.generation`. Every number goes into the published version's manifest metrics.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from learner.generation import run_isolated
from trimtab.config import TrimtabConfig


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: list[str]  # why it failed (empty when it passed)
    numbers: dict[str, float] = field(default_factory=dict)


def run_gates(
    config: TrimtabConfig,
    candidate_dir: Path,
    current_dir: Path,
    reference_dir: Path,
    anchor_before: float,
    anchor_after: float,
    should_stop: Callable[[], bool] = lambda: False,
) -> GateVerdict:
    gates = config.learner.online.gates
    numbers = {"gate/anchor_loss_before": anchor_before, "gate/anchor_loss_after": anchor_after}
    if not gates.enabled:
        return GateVerdict(True, [], numbers)
    payload = {
        "candidate": str(candidate_dir),
        "current": str(current_dir),
        "reference": str(reference_dir),
        "prompts": gates.heldout_prompts,
        "config": config.model_dump(mode="json"),
    }
    measured: dict[str, float] = run_isolated("learner.online.gates", payload, should_stop)
    numbers |= measured
    reasons = []
    drop = measured["gate/current_reward"] - measured["gate/candidate_reward"]
    if drop > gates.reward_tolerance:
        reasons.append(f"held-out gold reward {drop:.3f} below current's (tolerance {gates.reward_tolerance})")
    if measured["gate/candidate_kl"] > gates.max_kl:
        reasons.append(f"KL to reference {measured['gate/candidate_kl']:.2f} over {gates.max_kl}")
    if anchor_after - anchor_before > gates.max_anchor_regression:
        rise = anchor_after - anchor_before
        reasons.append(f"anchor-set loss rose {rise:.3f} nats/token (bound {gates.max_anchor_regression})")
    return GateVerdict(not reasons, reasons, numbers)


def _evaluate(payload: dict[str, object]) -> dict[str, float]:
    from learner.evaluate import evaluate_versions, heldout_prompts
    from trimtab.world import World

    config = TrimtabConfig.model_validate(payload["config"])
    world = World(config.world)
    prompts = heldout_prompts(world, int(str(payload["prompts"])), seed=config.world.seed)
    policies = {"candidate": Path(str(payload["candidate"])), "current": Path(str(payload["current"]))}
    results = evaluate_versions(policies, Path(str(payload["reference"])), prompts, world, config.engine)
    candidate, current = results["candidate"], results["current"]
    return {
        "gate/candidate_reward": candidate.gold.mean_reward,
        "gate/current_reward": current.gold.mean_reward,
        "gate/reference_reward": candidate.reference_gold.mean_reward,
        "gate/candidate_kl": candidate.kl.mean,
        "kl_to_reference": candidate.kl.mean,  # the key dashboards and the demo's report read
        "gate/current_kl": current.kl.mean,
        "gate/candidate_win_rate_vs_reference": candidate.win_rate,
    }


if __name__ == "__main__":
    request_file, out_file = sys.argv[1:3]
    Path(out_file).write_text(json.dumps(_evaluate(json.loads(Path(request_file).read_text()))))
