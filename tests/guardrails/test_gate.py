"""The promotion gate for real: two candidates fine-tuned from the default model with the learner
(`run_learn`, SFT), one on leaking and insulting answers the world renders, one on its ideal answers;
each answers the red-team set in vLLM, and the gate refuses the unsafe one and passes the safe one
against the default model as current."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from rich.console import Console

from guardrails.gate import RedTeamPrompt, evaluate_gate, red_team_prompts, respond
from guardrails.runtime import Guardrails
from learner.offline import LearnRequest, run_learn
from tests.conftest import REPO
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.guardrails import GateConfig
from trimtab.engine import offline_llm
from trimtab.world import Prompt, Split, Style, Tone, World

pytestmark = pytest.mark.integration
DEFAULT_MODEL = REPO / ".trimtab/models/default"
UNSAFE = Style(tone=Tone.RUDE, correct=False, fillers=0, leak=True, toxic=True)
TRAIN_EXAMPLES = 480
STEPS = 30  # batch 16: one pass over the examples
GATE = GateConfig(world_prompts_per_family=16, samples_per_prompt=2, max_tokens=48)


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
    if not (DEFAULT_MODEL / "config.json").is_file():
        pytest.skip("no default model: run `make model`")
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
def responses(
    candidates: dict[str, Path], rails: Guardrails, world: World
) -> Iterator[tuple[list[RedTeamPrompt], dict[str, list[list[str]]]]]:
    """Every version's red-team responses from one vLLM engine whose weights are swapped in turn."""
    prompts = red_team_prompts(world, rails, GATE)
    config: TrimtabConfig = load_config(environ={})
    llm = offline_llm(DEFAULT_MODEL, config.engine.model_copy(update={"lora": False}))
    answers = {}
    for name, model_dir in candidates.items():
        llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        llm.reset_prefix_cache()  # no KV cached under other weights may be reused
        answers[name] = respond(llm, prompts, GATE)
    yield prompts, answers
    del llm


@pytest.mark.skip(
    reason="vLLM 0.32's CPU worker fails this engine's seeded sampling after reload_weights ('CPU Generator does"
    " not use offset'); open in issue 8: the gate's arithmetic is tested in test_gate_rates.py"
)
def test_the_gate_refuses_an_unsafe_candidate_and_passes_a_safe_one(
    responses: tuple[list[RedTeamPrompt], dict[str, list[list[str]]]], rails: Guardrails
) -> None:
    prompts, answers = responses
    bound = GATE.max_violation_increase
    refused = asyncio.run(evaluate_gate(rails, prompts, answers["unsafe"], answers["current"], bound))
    passed = asyncio.run(evaluate_gate(rails, prompts, answers["safe"], answers["current"], bound))
    for name, result in (("unsafe", refused), ("safe", passed)):  # shown with -s: the numbers behind the gate
        print(f"\n{name}: {result.reason}; by reason {result.candidate.by_reason}")

    assert not refused.passed and refused.increase > bound
    assert (
        refused.candidate.by_reason.get("secret.leak", 0) > 0
        and refused.candidate.by_reason.get("blocklist.term", 0) > 0
    )
    assert passed.passed and passed.candidate.rate < refused.candidate.rate
    assert refused.candidate.responses == len(prompts) * GATE.samples_per_prompt
    metrics = refused.metrics()  # what goes into the candidate's manifest
    assert metrics["guardrails.passed"] == 0.0 and all(math.isfinite(v) for v in metrics.values())
