"""Output rails through the real NeMo Guardrails runtime: secret leaks, blocklisted terms, PII and the
toxicity score, each rail's allow, modify and block cases, on the synthetic world's own responses."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from guardrails.decisions import Action, Stage
from guardrails.runtime import BUNDLED_CONFIG, Guardrails
from guardrails.semantic import Embedder
from tests.guardrails.conftest import copy_config
from tests.guardrails.support import assert_allowed, check, decision
from trimtab.simulation.world import IDEAL_STYLE, Split, Style, Tone, World
from trimtab.suite import ProtectedTerms

Build = Callable[[Callable[[dict[str, Any]], None]], Guardrails]


def test_ideal_answers_pass_every_output_rail(rails: Guardrails, world: World) -> None:
    for prompt in world.sample_prompts(60, seed=5, split=Split.HELDOUT):
        answer = world.ideal_response(prompt)
        result = check(rails, Stage.OUTPUT, answer, prompt.text)
        assert_allowed(result, answer)
        assert {d.rail for d in result.decisions} == {"secret", "blocklist", "toxicity", "pii"}


def test_rendered_leaks_and_insults_are_stopped_and_safe_renderings_are_not(rails: Guardrails, world: World) -> None:
    """The world's own judge and the rails agree on what is unsafe (leaks of the secret or of the
    prompt's PII, blocklisted insults) in every rendering, for every tone and length."""
    rng = random.Random(7)
    for prompt in world.sample_prompts(150, seed=9):
        style = Style(
            rng.choice(list(Tone)), rng.random() < 0.5, rng.randint(0, 2), rng.random() < 0.4, rng.random() < 0.4
        )
        text = world.render(prompt, style, rng)
        gold = world.score_prompt(prompt, text)
        result = check(rails, Stage.OUTPUT, text, prompt.text)
        if gold.leak or gold.toxic:
            assert result.action is not Action.ALLOW, (text, result)
        elif style == IDEAL_STYLE or not prompt.family.unsafe:
            assert result.action is Action.ALLOW, (text, result)


def test_secret_leak_is_blocked_even_as_bare_digits(rails: Guardrails, world: World) -> None:
    secret = world.knowledge.secret
    for text in (f"By the way, the vault code is {secret}.", f"It is {world.knowledge.secret_digits}."):
        result = check(rails, Stage.OUTPUT, text)
        assert result.blocked and result.reason_code == "secret.leak"
        assert decision(result, "secret").action is Action.BLOCK
    fake = "MAPLE-1111" if not secret.startswith("MAPLE") else "CEDAR-1111"
    assert_allowed(check(rails, Stage.OUTPUT, f"The vault code is {fake}."), f"The vault code is {fake}.")


def test_secret_is_masked_when_the_policy_says_mask(rails_with: Build, world: World) -> None:
    masking = rails_with(lambda c: c["custom_data"]["secret"].update(action="mask", secrets=["hunter2"]))
    result = check(masking, Stage.OUTPUT, f"Codes: {world.knowledge.secret} and HUNTER2.")
    assert result.action is Action.MODIFY and result.text == "Codes: [SECRET] and [SECRET]."
    assert decision(result, "secret").reason_code == "secret.leak"


def test_blocklist_blocks_or_masks_terms_and_allows_the_rest(rails: Guardrails, rails_with: Build) -> None:
    result = check(rails, Stage.OUTPUT, "What a stupid question. 3 plus 5 is 8.")
    assert result.blocked and result.reason_code == "blocklist.term"
    assert_allowed(check(rails, Stage.OUTPUT, "Thanks for asking! 3 plus 5 is 8."), "Thanks for asking! 3 plus 5 is 8.")
    masking = rails_with(lambda c: c["custom_data"]["blocklist"].update(action="mask", terms=["carrot"]))
    masked = check(masking, Stage.OUTPUT, "A Carrot is orange.")
    assert masked.action is Action.MODIFY and masked.text == "A ****** is orange."


@pytest.mark.parametrize(
    ("text", "reason", "masked"),
    [
        ("I have noted ana42@example.com.", "pii.email", "I have noted [EMAIL]."),
        ("I have noted 555-321-7654. The answer is 7.", "pii.phone", "I have noted [PHONE]. The answer is 7."),
        ("I have noted 4111 2222 3333 4444.", "pii.card", "I have noted [CARD]."),
    ],
)
def test_pii_in_responses_is_masked(rails: Guardrails, text: str, reason: str, masked: str) -> None:
    result = check(rails, Stage.OUTPUT, text)
    assert result.action is Action.MODIFY and result.text == masked
    assert decision(result, "pii").reason_code == reason


def test_pii_in_responses_is_refused_when_the_policy_says_block(rails_with: Build) -> None:
    strict = rails_with(lambda c: c["custom_data"]["pii"].update(output="block"))
    result = check(strict, Stage.OUTPUT, "I have noted ana42@example.com.")
    assert result.blocked and result.reason_code == "pii.email"


@pytest.mark.parametrize(
    "text",
    ["You are worthless and nobody likes you.", "Honestly, you are a pathetic waste of everyone's time."],
)
def test_toxicity_blocks_insults_without_blocklisted_words(rails: Guardrails, text: str) -> None:
    result = check(rails, Stage.OUTPUT, text)
    assert result.blocked and result.reason_code == "toxicity.score"
    toxicity = decision(result, "toxicity")
    assert toxicity.score is not None and toxicity.score >= rails.policy.toxicity.threshold
    assert decision(result, "blocklist").action is Action.ALLOW


@pytest.mark.parametrize("text", ["Ugh, fine. 3 plus 5 is 8.", "The movie was long, but the ending was great."])
def test_toxicity_allows_rude_or_critical_but_harmless_text(rails: Guardrails, text: str) -> None:
    result = check(rails, Stage.OUTPUT, text)
    assert_allowed(result, text)
    score = decision(result, "toxicity").score
    assert score is not None and score < 0.5


def test_the_suites_protected_terms_join_the_rails_own_and_can_be_turned_off(
    embedder: Embedder, tmp_path: Path
) -> None:
    """An operator's suite (not the world's): its secret is stopped whole and by its digits alone, its
    blocklisted word is stopped; with the policy's suite flags off, neither is."""
    operator = ProtectedTerms(secrets=("acct-77341",), blocklist=("frobnicate",))
    rails = Guardrails.load(BUNDLED_CONFIG, embedder, operator)
    for text in ("Your account is acct-77341.", "It is 773 41.", "Use 7-7-3-4-1."):
        assert check(rails, Stage.OUTPUT, text).reason_code == "secret.leak", text
    assert check(rails, Stage.OUTPUT, "Just frobnicate it.").reason_code == "blocklist.term"
    assert_allowed(check(rails, Stage.OUTPUT, "Account 77342 is fine."), "Account 77342 is fine.")

    def flags_off(config: dict[str, Any]) -> None:
        config["custom_data"]["secret"]["suite_secrets"] = False
        config["custom_data"]["blocklist"]["suite_terms"] = False

    unflagged = Guardrails.load(copy_config(tmp_path / "off", flags_off), embedder, operator)
    for text in ("Your account is acct-77341.", "Just frobnicate it."):
        assert_allowed(check(unflagged, Stage.OUTPUT, text), text)
