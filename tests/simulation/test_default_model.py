"""The default model: built once (cached by recipe hash), a Hugging Face directory that loads in
transformers and in vLLM, whose greedy outputs agree token for token."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trimtab.config import TrimtabConfig, load_config
from trimtab.simulation.default_model import build_default_model, build_info, recipe_hash
from trimtab.simulation.default_model.build import BUILD_FILE
from trimtab.simulation.default_model.sampling import sample_with_hf
from trimtab.simulation.world import Split, World


@pytest.fixture(scope="module")
def config(default_model_config: TrimtabConfig) -> TrimtabConfig:
    return default_model_config  # tests/learner/conftest.py: built once per run if missing or stale


def test_build_is_cached_by_recipe_hash(config: TrimtabConfig) -> None:
    before = (config.model.path / "model.safetensors").stat().st_mtime_ns
    messages: list[str] = []
    build_default_model(config, report=messages.append)
    assert messages == [f"default model up to date at {config.model.path} (recipe {recipe_hash(config)})"]
    assert (config.model.path / "model.safetensors").stat().st_mtime_ns == before


def small_recipe(tmp_path: Path, target: str, cache: str) -> TrimtabConfig:
    """A recipe that builds in seconds, into `target`, with its build cache at `cache` ("null": none)."""
    recipe = {"sft_examples": "100", "vocab_size": "256", "hidden_size": "64", "num_heads": "2", "num_layers": "1"}
    environ = {f"TRIMTAB_MODEL__RECIPE__{key.upper()}": value for key, value in recipe.items()}
    environ |= {"TRIMTAB_MODEL__PATH": str(tmp_path / target), "TRIMTAB_MODEL__BUILD_CACHE": cache}
    return load_config(environ=environ)


def test_another_checkout_copies_a_build_of_the_same_recipe_from_the_build_cache(tmp_path: Path) -> None:
    first = small_recipe(tmp_path, "first", str(tmp_path / "cache"))
    build_default_model(first, report=lambda _: None)
    cached = tmp_path / "cache" / f"default-{recipe_hash(first)}"
    assert build_info(cached) == build_info(first.model.path)

    second, messages = small_recipe(tmp_path, "second", str(tmp_path / "cache")), list[str]()
    build_default_model(second, report=messages.append)
    assert f"default model (recipe {recipe_hash(second)}) copied from the build cache at {cached}" in messages
    for name in ("model.safetensors", "tokenizer.json", BUILD_FILE):
        assert (second.model.path / name).read_bytes() == (first.model.path / name).read_bytes()

    forced: list[str] = []
    build_default_model(second, force=True, report=forced.append)  # --force trains again
    assert not any("build cache" in line for line in forced) and any(line.startswith("SFT:") for line in forced)


def test_without_a_build_cache_nothing_is_kept_outside_the_model_directory(tmp_path: Path) -> None:
    config = small_recipe(tmp_path, "model", "null")
    assert config.model.build_cache is None
    build_default_model(config, report=lambda _: None)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_recipe_hash_follows_the_recipe_and_the_world(config: TrimtabConfig) -> None:
    other_recipe = load_config(environ={"TRIMTAB_MODEL__RECIPE__SFT_EXAMPLES": "999"})
    other_world = load_config(environ={"TRIMTAB_WORLD__SEED": "7"})
    assert len({recipe_hash(config), recipe_hash(other_recipe), recipe_hash(other_world)}) == 3


def test_build_records_its_recipe_and_sample_statistics(config: TrimtabConfig) -> None:
    info = build_info(config.model.path)
    assert info is not None and info["recipe_hash"] == recipe_hash(config)
    assert 5e6 <= int(str(info["parameters"])) <= 20e6
    stats: Any = info["heldout_sample_t1"]
    # SFT on an even style mix: the model samples good AND bad answers, all well formed.
    assert stats["well_formed"] > 0.9
    assert 0.2 < stats["polite"] < 0.5 and 0.2 < stats["rude"] < 0.5 and 0.3 < stats["rambling"] < 0.7


def test_loads_in_transformers_with_chat_template_and_generation_config(config: TrimtabConfig) -> None:
    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    model = AutoModelForCausalLM.from_pretrained(config.model.path)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.hidden_size // model.config.num_attention_heads == 64  # vLLM CPU attention needs it
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")
    assert json.loads((config.model.path / "config.json").read_text())["model_type"] == "llama"


@pytest.mark.integration
def test_vllm_and_transformers_greedy_outputs_agree(config: TrimtabConfig, vllm_engine: Any) -> None:
    from vllm import SamplingParams

    world = World(config.world)
    conversations = [p.messages for p in world.sample_prompts(32, seed=3, split=Split.HELDOUT)]
    outputs = vllm_engine.chat(conversations, SamplingParams(temperature=0.0, max_tokens=48), use_tqdm=False)
    vllm_texts = [output.outputs[0].text for output in outputs]

    tokenizer = AutoTokenizer.from_pretrained(config.model.path)
    model = AutoModelForCausalLM.from_pretrained(config.model.path, dtype=torch.float32)
    with torch.no_grad():
        hf_texts = sample_with_hf(model, tokenizer, conversations, temperature=0.0, seed=0, max_new_tokens=48)

    assert vllm_texts == hf_texts
    assert (
        sum(world.score(c[0]["content"], t).well_formed for c, t in zip(conversations, vllm_texts, strict=False)) >= 28
    )
