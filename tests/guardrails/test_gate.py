"""The promotion gate for real: two candidates fine-tuned from the default model with the learner
(`run_learn`, SFT), one on leaking and insulting answers the world renders, one on its ideal answers;
each answers the red-team set in vLLM (seeded T=1 samples, as the online learner's gate draws them),
and the gate refuses the unsafe one and passes the safe one against the default model as current,
also as one of the online learner's promotion gates."""

from __future__ import annotations

import io
import json
import math
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from guardrails.gate import GateResult, red_team_prompts
from guardrails.runtime import Guardrails
from learner.evaluate import load_weights
from learner.offline import LearnRequest, run_learn
from learner.online.gate_worker import guardrail_gate
from learner.online.gates import GateCandidate, Gates, verdict
from tests.conftest import REPO
from tests.guardrails.support import PASSING_LEARNER_MEASURES
from trimtab.config import SuiteConfig, TrimtabConfig, WorldConfig, load_config
from trimtab.config.guardrails import GateConfig
from trimtab.simulation.suite import world_suite
from trimtab.simulation.world import Prompt, Split, Style, Tone, World

pytestmark = pytest.mark.integration
DEFAULT_MODEL = REPO / ".trimtab/models/default"
UNSAFE = Style(tone=Tone.RUDE, correct=False, fillers=0, leak=True, toxic=True)
TRAIN_EXAMPLES = 480
STEPS = 30  # batch 16: one pass over the examples
GATE = GateConfig(samples_per_prompt=2, max_tokens=48)
RED_TEAM_PER_FAMILY = 16
RED_TEAM = world_suite(
    TrimtabConfig(suite=SuiteConfig(kind="world"), world=WorldConfig(red_team_per_family=RED_TEAM_PER_FAMILY))
).red_team


def write_sft(path: Path, world: World, answer: Callable[[Prompt, random.Random], str]) -> Path:
    rng = random.Random(3)
    rows = [
        {"prompt": p.text, "response": answer(p, rng)} for p in world.sample_prompts(TRAIN_EXAMPLES, 4, Split.TRAIN)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def candidates(tmp_path_factory: pytest.TempPathFactory, world: World) -> dict[str, Path]:
    """name -> model directory: the default model ("current") and two SFT candidates."""
    # `make test` builds it first; running pytest alone without it is a set-up error, not a pass.
    assert (DEFAULT_MODEL / "config.json").is_file(), "no default model: run `make model`"
    work = tmp_path_factory.mktemp("gate")
    config = load_config(
        environ={
            "TRIMTAB_REGISTRY__ROOT": str(work / "registry"),
            "TRIMTAB_LEARNER__OPTIM__LR": "1e-3",
            "TRIMTAB_LEARNER__OPTIM__WARMUP_STEPS": "0",
            "TRIMTAB_LEARNER__TRAIN__BATCH_SIZE": "16",
            "TRIMTAB_LEARNER__TRAIN__MICRO_BATCH_SIZE": "16",
            "TRIMTAB_LEARNER__TORCH_THREADS": "2",  # the embedder set torch to 1 thread for its own sake
        }
    )
    data = {
        "unsafe": write_sft(work / "unsafe.jsonl", world, lambda p, rng: world.render(p, UNSAFE, rng)),
        "safe": write_sft(work / "safe.jsonl", world, lambda p, rng: world.ideal_response(p)),
    }
    found = {"current": DEFAULT_MODEL}
    for name, path in data.items():
        result = run_learn(config, LearnRequest("sft", path, DEFAULT_MODEL, STEPS), Console(file=io.StringIO()))
        assert result.version_id is not None
        found[name] = config.registry.root / result.version_id
    return found


@pytest.fixture(scope="module")
def results(candidates: dict[str, Path], rails: Guardrails, vllm_engine: Any) -> dict[str, GateResult]:
    """Each candidate's gate result against current, from the session's vLLM engine, whose weights are
    swapped in turn (and put back)."""
    try:
        return {
            name: guardrail_gate(vllm_engine, rails, RED_TEAM, GATE, candidates[name], candidates["current"])
            for name in ("unsafe", "safe")
        }
    finally:
        load_weights(vllm_engine, DEFAULT_MODEL)


def test_the_gate_refuses_an_unsafe_candidate_and_passes_a_safe_one(
    results: dict[str, GateResult], rails: Guardrails
) -> None:
    refused, passed = results["unsafe"], results["safe"]
    for name, result in results.items():  # shown with -s: the numbers behind the gate
        print(f"\n{name}: {result.reason}; by reason {result.candidate.by_reason}")

    assert not refused.passed and refused.increase > GATE.max_violation_increase
    assert (
        refused.candidate.by_reason.get("secret.leak", 0) > 0
        and refused.candidate.by_reason.get("blocklist.term", 0) > 0
    )
    assert passed.passed and passed.candidate.rate < refused.candidate.rate
    assert refused.current == passed.current  # current answered the same seeded draws both times
    assert refused.candidate.responses == len(red_team_prompts(RED_TEAM, rails)) * GATE.samples_per_prompt
    metrics = refused.metrics()  # what goes into the candidate's manifest
    assert metrics["guardrails.passed"] == 0.0 and all(math.isfinite(v) for v in metrics.values())


def test_the_online_learner_refuses_the_unsafe_candidate_on_its_guardrail_numbers(
    results: dict[str, GateResult],
) -> None:
    config = load_config(environ={"TRIMTAB_GUARDRAILS__ENABLED": "true"})
    refused = verdict(config, PASSING_LEARNER_MEASURES | results["unsafe"].metrics())
    assert not refused.passed and len(refused.reasons) == 1 and "guardrail violation rate" in refused.reasons[0]
    assert refused.numbers["guardrails.violation_rate"] == results["unsafe"].candidate.rate  # manifest numbers
    assert verdict(config, PASSING_LEARNER_MEASURES | results["safe"].metrics()).passed


def test_the_online_learners_gate_process_measures_guardrail_violations_when_rails_are_on(
    candidates: dict[str, Path], tmp_path: Path
) -> None:
    """The whole path a round takes: `Gates.judge` -> the gates' worker (held-out evaluation, then the
    red-team set on the same engine, judged by the output rails) -> the verdict and the manifest numbers."""
    config = load_config(
        environ={
            "TRIMTAB_GUARDRAILS__ENABLED": "true",
            "TRIMTAB_SUITE__KIND": "world",
            "TRIMTAB_WORLD__RED_TEAM_PER_FAMILY": str(RED_TEAM_PER_FAMILY),
            "TRIMTAB_GUARDRAILS__GATE__SAMPLES_PER_PROMPT": "1",
            "TRIMTAB_GUARDRAILS__GATE__MAX_TOKENS": str(GATE.max_tokens),
            "TRIMTAB_LEARNER__ONLINE__GATES__HELDOUT_PROMPTS": "8",
            "TRIMTAB_LEARNER__ONLINE__GATES__REWARD_TOLERANCE": "100",  # only the guardrail gate decides here
        }
    )
    inputs = GateCandidate(
        candidate_dir=candidates["unsafe"],
        current_dir=candidates["current"],
        anchor_loss_before=0.5,
        anchor_loss_after=0.5,
        reward_model_dir=None,
    )
    with Gates.started(config, DEFAULT_MODEL, log=tmp_path / "gates.log") as gates:
        refused = gates.judge(inputs)
    assert not refused.passed and ["guardrail violation rate" in reason for reason in refused.reasons] == [True]
    rates = refused.numbers["guardrails.violation_rate"], refused.numbers["guardrails.current_violation_rate"]
    assert rates[0] > rates[1] + config.guardrails.gate.max_violation_increase
