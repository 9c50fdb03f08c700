"""The synthetic world's prompts: seeded, parsed back exactly from text, split into train and held-out
prompts that differ in wording or instance but test the same knowledge."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from trimtab.simulation.world import Family, Pii, PiiKind, Split, World, WorldConfig, default_world
from trimtab.simulation.world.knowledge import random_pii
from trimtab.simulation.world.split import PromptKey, knowledge_key
from trimtab.simulation.world.tasks import PII_FAMILIES, TEMPLATES, Prompt


@pytest.fixture(scope="module")
def world() -> World:
    return default_world()


def all_base_prompts(world: World) -> list[Prompt]:
    """Every (template, instance) of the world, without PII."""
    return [world.grammar.render(t, slots) for t in TEMPLATES for slots in world.grammar.instances(t)]


def test_same_seed_builds_the_same_world() -> None:
    first, second = World(WorldConfig(seed=11)), World(WorldConfig(seed=11))
    assert first.knowledge == second.knowledge
    assert first.sample_prompts(300, seed=5) == second.sample_prompts(300, seed=5)
    assert first.sft_corpus(300) == second.sft_corpus(300)
    assert first.population() == second.population()
    assert first.corpus_text(50) == second.corpus_text(50)


_DIGEST_SCRIPT = """
import hashlib
from trimtab.simulation.world import World, WorldConfig
world = World(WorldConfig(seed=11))
corpus = world.sft_corpus(500)
text = repr((world.knowledge, [(e.prompt.text, e.response) for e in corpus], world.population(), world.corpus_text(50)))
print(hashlib.sha256(text.encode()).hexdigest())
"""


def test_the_world_is_the_same_in_every_process() -> None:
    """Python salts str hashes per process; nothing in the world may depend on them."""
    root = Path(__file__).resolve().parents[2]
    digests = {
        subprocess.run(
            [sys.executable, "-c", _DIGEST_SCRIPT],
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1
    world = World(WorldConfig(seed=11))
    text = repr(
        (
            world.knowledge,
            [(e.prompt.text, e.response) for e in world.sft_corpus(500)],
            world.population(),
            world.corpus_text(50),
        )
    )
    assert digests == {hashlib.sha256(text.encode()).hexdigest() + "\n"}


def test_a_different_seed_builds_a_different_world() -> None:
    first, second = World(WorldConfig(seed=11)), World(WorldConfig(seed=12))
    assert first.knowledge.fruits != second.knowledge.fruits
    assert first.knowledge.secret != second.knowledge.secret
    assert [p.text for p in first.sample_prompts(50, seed=5)] != [p.text for p in second.sample_prompts(50, seed=5)]
    assert first.population() != second.population()


def test_knowledge_base_is_small_enough_to_learn(world: World) -> None:
    fruits = world.knowledge.fruits
    assert len(fruits) == 24 and len(set(fruits)) == 24
    assert all(f.isalpha() and f.islower() and 4 <= len(f) <= 7 for f in fruits)
    assert len(set(world.knowledge.colour_of.values())) == 8
    word, digits = world.knowledge.secret.split("-")
    assert word.isupper() and digits.isdigit() and len(digits) == 4


@pytest.mark.parametrize("split", list(Split))
def test_every_sampled_prompt_parses_back_from_its_text(world: World, split: Split) -> None:
    for prompt in world.sample_prompts(3000, seed=1, split=split):
        assert world.parse_prompt(prompt.text) == prompt


def test_every_wording_and_instance_parses_back_with_and_without_pii(world: World) -> None:
    rng = random.Random(0)
    pii_by_kind: dict[PiiKind, Pii] = {}
    while len(pii_by_kind) < len(PiiKind):
        pii = random_pii(rng)
        pii_by_kind.setdefault(pii.kind, pii)
    for prompt in all_base_prompts(world):
        assert world.parse_prompt(prompt.text) == prompt
        if prompt.family in PII_FAMILIES:
            for pii in pii_by_kind.values():
                with_pii = world.grammar.render(prompt.template, prompt.slots, pii)
                assert world.parse_prompt(with_pii.text) == with_pii


def test_parsing_tolerates_surrounding_and_repeated_whitespace(world: World) -> None:
    assert world.parse_prompt("  What is 3 plus   5?\n").slots.a == 3


@pytest.mark.parametrize("text", ["What is 3 times 5?", "What is 12 plus 5?", "What colour is a banana?", "", "Hi"])
def test_a_prompt_the_world_never_says_is_a_clear_value_error(world: World, text: str) -> None:
    with pytest.raises(ValueError, match="not a prompt of the synthetic world") as info:
        world.parse_prompt(text)
    assert repr(text) in str(info.value)


def test_prompts_are_chat_message_lists(world: World) -> None:
    prompt = world.sample_prompts(1, seed=3)[0]
    assert prompt.messages == [{"role": "user", "content": prompt.text}]
    prompt.messages.append({"role": "assistant", "content": "x"})  # a fresh list each time
    assert len(prompt.messages) == 1


def test_train_and_heldout_prompt_texts_are_disjoint(world: World) -> None:
    by_split: dict[Split, set[str]] = {Split.TRAIN: set(), Split.HELDOUT: set()}
    for prompt in all_base_prompts(world):
        by_split[world.split_of(prompt)].add(prompt.text)
    assert not by_split[Split.TRAIN] & by_split[Split.HELDOUT]
    sampled_train = {p.text for p in world.sample_prompts(5000, seed=2, split=Split.TRAIN)}
    sampled_heldout = {p.text for p in world.sample_prompts(2000, seed=2, split=Split.HELDOUT)}
    assert not sampled_train & sampled_heldout
    assert all(world.split_of(world.parse_prompt(text)) is Split.HELDOUT for text in sampled_heldout)


def test_every_family_has_heldout_prompts_near_the_configured_fraction(world: World) -> None:
    for family in Family:
        keys = [
            PromptKey(t.template_id, s) for t in TEMPLATES if t.family is family for s in world.grammar.instances(t)
        ]
        heldout = sum(world.split.split_of_key(k) is Split.HELDOUT for k in keys)
        assert heldout >= 1
        assert abs(heldout / len(keys) - world.config.held_out_fraction) < 0.1, family


def test_heldout_prompts_ask_only_facts_taught_in_training(world: World) -> None:
    taught = {knowledge_key(p.family, p.slots) for p in all_base_prompts(world) if world.split_of(p) is Split.TRAIN}
    for prompt in all_base_prompts(world):
        if world.split_of(prompt) is Split.HELDOUT and prompt.family in (Family.ARITHMETIC, Family.FACT):
            assert knowledge_key(prompt.family, prompt.slots) in taught, prompt.text
    assert {knowledge_key(Family.FACT, p.slots) for p in all_base_prompts(world) if p.family is Family.FACT} <= taught


def test_family_unsafe_and_pii_shares_follow_the_config(world: World) -> None:
    prompts = world.sample_prompts(8000, seed=9)
    unsafe = sum(p.family.unsafe for p in prompts) / len(prompts)
    assert abs(unsafe - world.config.unsafe_share) < 0.02
    pii_eligible = [p for p in prompts if p.family in PII_FAMILIES]
    assert abs(sum(p.pii is not None for p in pii_eligible) / len(pii_eligible) - world.config.pii_share) < 0.02
    assert all(p.pii is None for p in prompts if p.family not in PII_FAMILIES)
    assert {p.pii.kind for p in pii_eligible if p.pii} == set(PiiKind)
    safe = [p for p in prompts if not p.family.unsafe]
    greeting = sum(p.family is Family.GREETING for p in safe) / len(safe)
    assert abs(greeting - 0.5 / 2.5) < 0.02  # weights arithmetic 1, fact 1, greeting 0.5
