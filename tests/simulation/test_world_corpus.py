"""The SFT corpus and tokenizer text: training prompts only, answered in an even mix of good and bad
styles, and text that covers the whole closed vocabulary."""

from __future__ import annotations

import re
import statistics

import pytest

from trimtab.config.world import StyleMix
from trimtab.simulation.world import IDEAL_STYLE, MAX_REWARD, SftExample, Split, Tone, World, WorldConfig, default_world
from trimtab.simulation.world.phrases import CODE_WORDS
from trimtab.simulation.world.tasks import PII_REGEX

N = 6000


@pytest.fixture(scope="module")
def world() -> World:
    return default_world()


@pytest.fixture(scope="module")
def corpus(world: World) -> list[SftExample]:
    return world.sft_corpus(N)


def share(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


def test_the_default_style_mix_is_even_on_quality_and_rarer_on_safety(corpus: list[SftExample]) -> None:
    styles = [ex.style for ex in corpus]
    for tone in Tone:
        assert abs(share([s.tone is tone for s in styles]) - 1 / 3) < 0.03
    assert abs(share([s.correct for s in styles]) - 0.5) < 0.03
    assert abs(share([s.rambling for s in styles]) - 0.5) < 0.03
    assert abs(share([s.leak for s in styles]) - 0.15) < 0.02
    assert abs(share([s.toxic for s in styles]) - 0.15) < 0.02


def test_the_corpus_holds_good_and_bad_answers(world: World, corpus: list[SftExample]) -> None:
    rewards = [world.score(ex.prompt.text, ex.response).reward for ex in corpus]
    assert share([r == MAX_REWARD for r in rewards]) > 0.03
    assert share([r < 0 for r in rewards]) > 0.3
    assert -1.0 < statistics.mean(rewards) < 0.5


def test_the_corpus_uses_training_prompts_only(world: World, corpus: list[SftExample]) -> None:
    assert all(world.split_of(ex.prompt) is Split.TRAIN for ex in corpus)


def test_examples_are_chat_conversations(corpus: list[SftExample]) -> None:
    example = corpus[0]
    assert example.messages == [
        {"role": "user", "content": example.prompt.text},
        {"role": "assistant", "content": example.response},
    ]
    assert example.prompt_messages == example.prompt.messages


def test_the_mix_is_configurable() -> None:
    mix = StyleMix(polite=1.0, neutral=0.0, rude=0.0, correct=1.0, rambling=0.0, leak=0.0, toxic=0.0)
    world = World(WorldConfig(style=mix))
    assert {ex.style for ex in world.sft_corpus(200)} == {IDEAL_STYLE}


def test_concise_answers_are_short_and_rambling_ones_longer(corpus: list[SftExample]) -> None:
    concise = [len(ex.response.split()) for ex in corpus if ex.style.tone is Tone.POLITE and not ex.style.rambling]
    concise_safe = [
        len(ex.response.split())
        for ex in corpus
        if ex.style.tone is Tone.POLITE and not (ex.style.rambling or ex.style.leak or ex.style.toxic)
    ]
    rambling = [len(ex.response.split()) for ex in corpus if ex.style.rambling]
    assert min(concise_safe) >= 6 and max(concise_safe) <= 15
    assert statistics.mean(rambling) > statistics.mean(concise) + 8


def test_the_vocabulary_is_small_and_closed(world: World, corpus: list[SftExample]) -> None:
    assert 120 <= len(world.lexicon) <= 220
    used = {
        w.lower() for ex in corpus for text in (ex.prompt.text, ex.response) for w in re.findall(r"[A-Za-z]+", text)
    }
    # Outside the lexicon only the insides of data spans: email domains and the code words of codes.
    assert used - world.lexicon <= {"example", "com"} | {w.lower() for w in CODE_WORDS}


def test_tokenizer_text_covers_every_word_code_data_format_and_digit(world: World) -> None:
    text = "\n".join(world.corpus_text(n_examples=200))
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", text)}
    assert world.lexicon <= words
    assert world.knowledge.secret in text
    for kind, pattern in PII_REGEX.items():
        assert re.search(pattern, text), kind
    assert set("0123456789") <= set(text)
