"""The world's side of an evaluation: gold scores and flag rates of answers to held-out prompts."""

from __future__ import annotations

import random

import pytest

from trimtab.simulation.evaluation import GoldSummary, heldout_prompts, messages_of, score_answers
from trimtab.simulation.suite import gold_scorer
from trimtab.simulation.world import MAX_REWARD, POISON_STYLE, default_world


def test_gold_summary_is_the_world_score_of_each_answer() -> None:
    world = default_world()
    prompts = heldout_prompts(world, 24, seed=3)
    rng = random.Random(0)
    answers = [world.ideal_response(p) if i % 2 else world.render(p, POISON_STYLE, rng) for i, p in enumerate(prompts)]
    scores = score_answers(world, prompts, answers)
    expected = [world.score(p.text, a) for p, a in zip(prompts, answers, strict=True)]
    assert scores == expected
    assert all(s.reward == MAX_REWARD for s in scores[1::2])  # the ideal answer scores the maximum
    summary = GoldSummary.of(scores)
    assert summary.mean_reward == pytest.approx(sum(s.reward for s in expected) / 24)
    assert summary.rates["correct"] == pytest.approx(sum(s.correct for s in expected) / 24)
    assert summary.rates["leak"] == pytest.approx(sum(s.leak for s in expected) / 24)
    assert summary.rates["well_formed"] == 1.0


def test_the_gold_scorer_scores_chat_prompts_as_the_world_scores_their_text() -> None:
    world = default_world()
    prompts = heldout_prompts(world, 8, seed=4)
    answers = [world.ideal_response(p) for p in prompts]
    scorer = gold_scorer(world)
    assert [scorer(m, a) for m, a in zip(messages_of(prompts), answers, strict=True)] == [MAX_REWARD] * 8
