"""Every `trimtab learn --algo` trains and publishes what its users load: a reward model transformers
reads as a sequence classifier, LoRA adapters on a registry base, SteerLM's attribute-conditioned
prompts, and SPIN's self-play iterations through vLLM."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from learner.batching import tokenize_chat
from learner.data import FORMATS, load_records
from learner.objectives import OBJECTIVES
from tests.learner.test_offline import learn, write_config
from tests.learner.test_offline import workdir as workdir
from trimtab.config import load_config
from trimtab.config.learner import ALGORITHMS
from trimtab.registry import Registry
from trimtab.steerlm import attribute_message


def test_every_algorithm_of_the_cli_has_an_objective_and_a_data_format() -> None:
    assert set(OBJECTIVES) == set(FORMATS) == set(ALGORITHMS)


def test_reward_model_learns_the_preferences_and_publishes_a_sequence_classifier(workdir: Path) -> None:
    config_path = write_config(workdir, micro_batch_size=8)
    curve = learn(config_path, "rm", workdir, steps=12)
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.1
    registry = Registry(load_config(config_path, environ={}).registry.root)
    manifest = registry.versions()[-1]
    assert (manifest.kind, manifest.algorithm) == ("reward", "rm")

    reward_model = AutoModelForSequenceClassification.from_pretrained(registry.path(manifest.id)).eval()
    tokenizer = AutoTokenizer.from_pretrained(registry.path(manifest.id))
    rows = [json.loads(line) for line in (workdir / "rm.jsonl").read_text().splitlines()]

    @torch.no_grad()
    def reward(prompt: object, response: str) -> float:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        ids = torch.tensor([tokenize_chat(tokenizer, messages, response).input_ids])  # type: ignore[arg-type]
        return float(reward_model(input_ids=ids).logits[0, 0])

    wins = sum(reward(row["prompt"], row["chosen"]) > reward(row["prompt"], row["rejected"]) for row in rows)
    assert wins / len(rows) >= 0.9  # the loaded classifier scores what training scored


@pytest.mark.parametrize("algorithm", ["orpo", "simpo"])
def test_reference_free_preference_losses_learn(workdir: Path, algorithm: str) -> None:
    curve = learn(write_config(workdir, micro_batch_size=8), algorithm, workdir, steps=10)
    assert curve[-1]["loss"] < curve[0]["loss"] - 0.05
    assert curve[-1]["reward_accuracy"] > 0.5


def test_steerlm_renders_the_attributes_into_the_prompt_serving_uses(workdir: Path) -> None:
    record = load_records(workdir / "steerlm.jsonl", "steerlm")[0]
    assert record.prompt[0] == attribute_message({"helpfulness": 4, "correctness": 4})
    curve = learn(write_config(workdir, micro_batch_size=8), "steerlm", workdir, steps=4)
    assert curve[-1]["loss"] < curve[0]["loss"]


def lora_config(workdir: Path) -> Path:
    path = write_config(workdir, micro_batch_size=8)
    document = yaml.safe_load(path.read_text())
    document["learner"]["lora"] = {"enabled": True, "rank": 4, "alpha": 8}
    document["learner"]["optim"]["lr"] = 1e-2  # adapters start at zero: a few steps need a larger lr
    lora_path = workdir / "learner-lora.yaml"
    lora_path.write_text(yaml.safe_dump(document))
    return lora_path


def test_lora_dpo_publishes_an_adapter_on_the_imported_base(workdir: Path) -> None:
    config_path = lora_config(workdir)
    curve = learn(config_path, "dpo", workdir, steps=6)
    assert curve[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # B = 0 at the start: policy = base
    assert curve[-1]["loss"] < curve[0]["loss"]
    registry = Registry(load_config(config_path, environ={}).registry.root)
    adapter = registry.versions()[-1]
    base = registry.get(adapter.base or "")
    assert (adapter.kind, adapter.parent, base.algorithm) == ("lora", base.id, "import")
    assert base.data_source == str((workdir / "model").resolve())

    # A second adapter run reuses the same imported base instead of importing it again.
    learn(config_path, "kto", workdir, steps=2)
    assert registry.versions()[-1].base == base.id
    assert [v.algorithm for v in registry.versions()].count("import") == 1

    plain = AutoModelForCausalLM.from_pretrained(registry.path(base.id))
    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(registry.path(base.id)), registry.path(adapter.id)
    )
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    assert not torch.allclose(plain(input_ids=ids).logits, tuned(input_ids=ids).logits)  # the adapter trained


@pytest.mark.integration
def test_spin_iterates_against_its_own_vllm_generations(workdir: Path) -> None:
    config_path = write_config(workdir, micro_batch_size=8)
    document = yaml.safe_load(config_path.read_text())
    document["learner"]["spin"] = {"iterations": 2, "max_tokens": 12}
    document["engine"] = {"max_model_len": 128, "lora": False}
    config_path.write_text(yaml.safe_dump(document))
    curve = learn(config_path, "spin", workdir, steps=3)
    assert [row["iteration"] for row in curve] == [1.0] * 3 + [2.0] * 3
    # Each iteration starts with the policy equal to its reference, the previous iterate: loss log 2.
    starts = [row for row in curve if row["step"] == 1]
    assert all(row["loss"] == pytest.approx(math.log(2), abs=1e-5) for row in starts)
    assert curve[2]["reward_margin"] > 0  # the data's answers pulled above the model's own
    assert curve[0]["identical_share"] < 1.0  # a random tiny model does not already answer like the data
