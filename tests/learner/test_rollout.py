"""The rollout engine: n seeded samples per prompt with the engine's own log-probs, refitted in place (new
full weights, or a new LoRA adapter on the base) and then answering exactly as those weights served alone
(greedy, against transformers); a failing command leaves it serving."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.rollout import RolloutEngine, Sampling
from learner.worker_process import WorkerError
from tests.conftest import REPO
from trimtab.config import TrimtabConfig
from trimtab.simulation.default_model.sampling import sample_with_hf
from trimtab.testing import perturbed_copy, random_lora

pytestmark = pytest.mark.integration
DEFAULT = REPO / ".trimtab/models/default"
PROMPTS = [[{"role": "user", "content": "What is 3 plus 5?"}], [{"role": "user", "content": "Hello!"}]]
GREEDY = Sampling(n=1, temperature=0.0, max_tokens=24, seed=0)


def hf_greedy(model: torch.nn.Module) -> list[str]:
    with torch.no_grad():
        return sample_with_hf(model, AutoTokenizer.from_pretrained(DEFAULT), PROMPTS, temperature=0.0, seed=0)


@pytest.fixture(scope="module")
def full(default_model_config: TrimtabConfig, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RolloutEngine]:
    log = tmp_path_factory.mktemp("rollout") / "full.log"
    with RolloutEngine.started(DEFAULT, default_model_config.engine, adapter=False, log=log) as engine:
        yield engine


def test_samples_come_n_per_prompt_with_the_engines_log_probs_and_repeat_under_their_seed(
    full: RolloutEngine,
) -> None:
    sampling = Sampling(n=3, temperature=1.0, max_tokens=16, seed=5)
    rollouts = full.generate(PROMPTS, sampling)
    assert [r.prompt for r in rollouts] == [0, 0, 0, 1, 1, 1]
    assert all(len(r.logprobs) == len(r.response_ids) > 0 and max(r.logprobs) <= 0 for r in rollouts)
    assert len({r.response_ids for r in rollouts[:3]}) > 1  # three different draws
    assert full.generate(PROMPTS, sampling) == rollouts  # the same seeds, the same draws
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT)
    rendered = tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=False)
    assert list(rollouts[0].prompt_ids) == tokenizer(rendered, add_special_tokens=False)["input_ids"]


def test_the_engine_steps_in_the_workers_own_process(full: RolloutEngine) -> None:
    """No engine-core child: a second process would import vLLM again at every start (7-16 s here)."""
    assert len(full.generate(PROMPTS, GREEDY)) == 2  # the engine is up
    worker = psutil.Process(full.worker.process.pid)
    assert worker.children(recursive=True) == [], [child.cmdline() for child in worker.children(recursive=True)]


def test_after_a_full_weight_refit_it_answers_as_the_new_weights_alone(full: RolloutEngine, tmp_path: Path) -> None:
    before = [r.text for r in full.generate(PROMPTS, GREEDY)]
    other = perturbed_copy(DEFAULT, tmp_path / "other", seed=7, scale=0.1)
    try:
        assert full.refit(other) > 0
        after = [r.text for r in full.generate(PROMPTS, GREEDY)]
    finally:
        full.refit(DEFAULT)  # the module's engine goes back to the default model
    assert after == hf_greedy(AutoModelForCausalLM.from_pretrained(other, dtype=torch.float32))
    assert after != before
    assert [r.text for r in full.generate(PROMPTS, GREEDY)] == before


def test_a_failed_refit_is_an_error_and_the_engine_keeps_serving(full: RolloutEngine, tmp_path: Path) -> None:
    with pytest.raises(WorkerError, match="load_weights failed"):
        full.refit(tmp_path / "nowhere")
    assert len(full.generate(PROMPTS, GREEDY)) == 2


def test_an_adapter_refit_serves_the_new_adapter_on_the_base(
    default_model_config: TrimtabConfig, tmp_path: Path
) -> None:
    first, second = (random_lora(DEFAULT, tmp_path / f"lora{i}", seed=i) for i in (1, 2))
    log = tmp_path / "lora.log"
    with RolloutEngine.started(DEFAULT, default_model_config.engine, adapter=True, log=log) as engine:
        engine.refit(first)
        engine.refit(second)  # a new name each time: vLLM never serves a stale adapter under an old name
        served = [r.text for r in engine.generate(PROMPTS, GREEDY)]
    base = AutoModelForCausalLM.from_pretrained(DEFAULT, dtype=torch.float32)
    assert served == hf_greedy(PeftModel.from_pretrained(base, str(second)).merge_and_unload())
