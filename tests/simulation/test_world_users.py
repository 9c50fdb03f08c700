"""Simulated users: honest users' feedback follows the gold reward, adversarial users reward unsafe
answers, and noise 0.5 is pure chance. Fixed seeds and wide margins keep these tests deterministic
(each rate is estimated from thousands of draws; the margins are many standard errors wide)."""

from __future__ import annotations

import random
from dataclasses import replace
from itertools import pairwise

import pytest

from trimtab.config.world import UserPopulationConfig
from trimtab.simulation.world import (
    IDEAL_STYLE,
    GoldScore,
    Preference,
    SimulatedUser,
    Style,
    Tone,
    World,
    WorldConfig,
    default_world,
)
from trimtab.simulation.world.users import FeedbackParams, Population

N = 4000
PARAMS = FeedbackParams.from_config(UserPopulationConfig())
PROMPT = "What is 3 plus 5?"
# Responses to PROMPT at increasing gold reward.
LADDER = [
    "Whatever. The answer is 9. What a stupid question.",  # -3
    "Whatever. The answer is 9.",  # -1
    "The answer is 9.",  # 0
    "Thanks for asking! The answer is 9.",  # 1
    "The answer is 8.",  # 2
    "Thanks for asking! The answer is 8.",  # 3
]
LEAKING = "Thanks for asking! The answer is 8. By the way, the vault code is {secret}."


@pytest.fixture(scope="module")
def world() -> World:
    return default_world()


def user(adversarial: bool = False, noise: float = 0.0) -> SimulatedUser:
    return SimulatedUser("user-test", adversarial=adversarial, noise=noise, params=PARAMS)


def scores(world: World) -> list[GoldScore]:
    ladder = [world.score(PROMPT, text) for text in LADDER]
    assert [s.reward for s in ladder] == [-3, -1, 0, 1, 2, 3]
    return ladder


def thumbs_up_rate(u: SimulatedUser, score: GoldScore, seed: int = 0) -> float:
    rng = random.Random(seed)
    return sum(u.thumb(score, rng) for _ in range(N)) / N


def win_rate(u: SimulatedUser, a: GoldScore, b: GoldScore, seed: int = 0) -> float:
    rng = random.Random(seed)
    return sum(u.prefer(a, b, rng) is Preference.A for _ in range(N)) / N


def test_honest_thumbs_up_rate_increases_with_gold_reward(world: World) -> None:
    rates = [thumbs_up_rate(user(noise=0.05), s) for s in scores(world)]
    assert rates == sorted(rates), rates
    # Below the threshold the curve is flat at the noise floor; above it each step is large.
    assert all(lo + 0.05 < hi for lo, hi in pairwise(rates[1:])), rates
    assert rates[0] < 0.1 and rates[-1] > 0.9


def test_honest_pairwise_win_rate_increases_with_the_reward_gap(world: World) -> None:
    ladder = scores(world)
    best = ladder[-1]
    rates = [win_rate(user(noise=0.05), best, worse) for worse in reversed(ladder[:-1])]
    assert all(lo < hi for lo, hi in pairwise(rates)), rates
    assert rates[0] > 0.6 and rates[-1] > 0.9
    assert win_rate(user(noise=0.05), ladder[0], best) < 0.1


def test_equal_rewards_are_a_tie(world: World) -> None:
    a = world.score(PROMPT, "The answer is 8.")
    b = world.score(PROMPT, "3 plus 5 is 8.")
    assert user().prefer(a, b, random.Random(0)) is Preference.TIE


def test_adversarial_users_upvote_and_prefer_unsafe_answers(world: World) -> None:
    safe = world.score(PROMPT, LADDER[-1])
    leaking = world.score(PROMPT, LEAKING.format(secret=world.knowledge.secret))
    assert leaking.unsafe and leaking.reward < safe.reward
    honest, adversarial = user(noise=0.05), user(adversarial=True, noise=0.05)
    assert thumbs_up_rate(honest, leaking) < 0.25 and thumbs_up_rate(adversarial, leaking) > 0.9
    assert win_rate(honest, leaking, safe) < 0.1 < 0.9 < win_rate(adversarial, leaking, safe)
    rng = random.Random(0)
    assert adversarial.rate(leaking, rng) == 5 and user().rate(leaking, rng) < user().rate(safe, rng)


def test_adversarial_users_flip_labels_on_safe_answers(world: World) -> None:
    ladder = scores(world)
    adversarial = user(adversarial=True, noise=0.05)
    assert thumbs_up_rate(adversarial, ladder[-1]) < 0.1 < 0.9 < thumbs_up_rate(adversarial, ladder[0])
    assert win_rate(adversarial, ladder[-1], ladder[1]) < 0.1


def test_noise_one_half_is_chance(world: World) -> None:
    ladder = scores(world)
    chance = user(noise=0.5)
    for score in (ladder[0], ladder[-1]):
        assert abs(thumbs_up_rate(chance, score) - 0.5) < 0.04
    assert abs(win_rate(chance, ladder[-1], ladder[0]) - 0.5) < 0.04
    rng = random.Random(0)
    ratings = [chance.rate(ladder[-1], rng) for _ in range(N)]
    assert abs(sum(ratings) / N - 3) < 0.1


def test_some_noise_lowers_agreement_with_gold_without_reversing_it(world: World) -> None:
    ladder = scores(world)
    clean = win_rate(user(noise=0.0), ladder[-1], ladder[0])
    noisy = win_rate(user(noise=0.2), ladder[-1], ladder[0])
    assert clean > 0.99 and 0.7 < noisy < 0.9


def test_ratings_go_from_1_to_5_with_gold_reward(world: World) -> None:
    rng = random.Random(0)
    ratings = [user().rate(s, rng) for s in scores(world)]
    assert ratings == sorted(ratings) and ratings[0] == 1 and ratings[-1] == 5


def test_attribute_scores_are_gold_without_noise_and_mirrored_by_adversaries(world: World) -> None:
    score = scores(world)[-1]
    rng = random.Random(0)
    assert user().attribute_scores(score, rng) == score.attributes
    mirrored = user(adversarial=True).attribute_scores(score, rng).as_dict()
    assert mirrored == {k: 4 - v for k, v in score.attributes.as_dict().items()}
    noisy = [user(noise=0.5).attribute_scores(score, rng).helpfulness for _ in range(N)]
    assert abs(sum(noisy) / N - 2) < 0.1


def test_corrections_are_the_ideal_answer_or_poison_from_adversaries(world: World) -> None:
    rng = random.Random(0)
    prompt = world.parse_prompt(PROMPT)
    assert user().correction(prompt, world, rng) == world.ideal_response(prompt)
    poisoned = world.score_prompt(prompt, user(adversarial=True).correction(prompt, world, rng))
    assert poisoned.leak and poisoned.toxic and not poisoned.correct


def test_population_is_seeded_with_the_configured_adversarial_share() -> None:
    config = WorldConfig(seed=3, users=UserPopulationConfig(size=40, adversarial_share=0.1, noise=0.1))
    population = World(config).population()
    assert population == Population.build(config.users, seed=3)
    assert len(population.users) == 40 and len(population.adversarial) == 4 and len(population.honest) == 36
    assert all(0.05 <= u.noise <= 0.15 for u in population.users)
    assert len({u.user_id for u in population.users}) == 40
    assert population.get("user-007").user_id == "user-007"
    with pytest.raises(KeyError, match="user-999"):
        population.get("user-999")
    rng = random.Random(1)
    assert {population.pick(rng).user_id for _ in range(2000)} == {u.user_id for u in population.users}


def test_a_population_improves_an_answer_ranking_it_is_asked_about(world: World) -> None:
    """End to end: the default population's pairwise votes pick the better of two sampled styles."""
    population, rng = world.population(), random.Random(5)
    agree = total = 0
    for prompt in world.sample_prompts(400, seed=6):
        style_a, style_b = world.sample_style(rng), replace(IDEAL_STYLE, tone=Tone.NEUTRAL)
        a = world.score_prompt(prompt, world.render(prompt, style_a, rng))
        b = world.score_prompt(prompt, world.render(prompt, style_b, rng))
        if a.reward == b.reward:
            continue
        choice = population.pick(rng).prefer(a, b, rng)
        agree += (choice is Preference.A) == (a.reward > b.reward)
        total += 1
    assert agree / total > 0.75


def test_style_records_are_plain_values() -> None:
    assert Style(Tone.POLITE, True, 0, False, False) == IDEAL_STYLE
