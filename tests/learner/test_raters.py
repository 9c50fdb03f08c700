"""Rater agreement (`learner.online.raters`): each user's weight from how often their own comparisons agree
with the suite's judge, in the items a round takes and in the canary's tally."""

from __future__ import annotations

import io
import logging
import math
import random
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from rich.console import Console

from learner.online.memory import LearnerMemory
from learner.online.raters import RaterCounts, Raters
from learner.online.rounds import Replay
from tests.learner.online_support import feedback, small_learner_env
from tests.learner.tiny import make_tiny_model
from tests.metrics import metric_points, series
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig, load_config
from trimtab.config.online import RaterConfig
from trimtab.events import event_producer, send_event
from trimtab.simulation.suite import world_suite
from trimtab.simulation.world import Population, Preference, default_world
from trimtab.suite import EvaluationSuite, Judge, checked
from trimtab.v1 import events_pb2, feedback_pb2


def by_length(prompt: list[dict[str, str]], response: str) -> float:
    """A judge that prefers longer answers (any fixed order will do)."""
    return float(len(response))


LENGTH = checked(by_length, "by_length")


def voted(user: str, label: feedback_pb2.FeedbackLabel, texts: tuple[str, ...]) -> events_pb2.FeedbackEvent:
    """`user`'s `label` on a response record whose candidates res_0, res_1, ... say `texts`."""
    event = feedback(label)
    event.user_id = user
    del event.served.candidates[len(texts) :]
    for candidate, text in zip(event.served.candidates, texts, strict=True):
        candidate.reply.text = text
    return event


def pair(user: str, chosen: str, rejected: str) -> events_pb2.FeedbackEvent:
    choice = feedback_pb2.Pairwise(chosen_response_id="res_0", rejected_response_id="res_1")
    return voted(user, feedback_pb2.FeedbackLabel(pairwise=choice), (chosen, rejected))


def thumb(user: str, text: str, up: bool) -> events_pb2.FeedbackEvent:
    verdict = feedback_pb2.THUMB_UP if up else feedback_pb2.THUMB_DOWN
    return voted(user, feedback_pb2.FeedbackLabel(thumb=verdict), (text,))


def rating(user: str, text: str, stars: int) -> events_pb2.FeedbackEvent:
    return voted(user, feedback_pb2.FeedbackLabel(rating=stars), (text,))


def exact_weight(agreements: int, comparisons: int, prior_votes: int) -> float:
    """min(1, 2 P(q > 1/2)) for q ~ Beta(a, b) with whole a, b, by the binomial identity
    P(Beta(a, b) > x) = P(Binomial(a + b - 1, x) <= a - 1): an independent route to the same number."""
    a, b = prior_votes // 2 + agreements, prior_votes // 2 + comparisons - agreements
    n = a + b - 1
    above = math.fsum(math.comb(n, i) for i in range(a)) / 2**n
    return min(1.0, 2 * above)


@pytest.mark.parametrize(
    ("agreements", "comparisons"), [(0, 0), (5, 10), (10, 10), (3, 10), (6, 20), (9, 30), (0, 10), (40, 100)]
)
def test_the_weight_is_twice_the_chance_the_user_agrees_more_often_than_not_at_most_one(
    agreements: int, comparisons: int
) -> None:
    raters = Raters(LENGTH, RaterConfig(prior_votes=10), {"u": RaterCounts(agreements, comparisons)})
    assert raters.weight("u") == pytest.approx(exact_weight(agreements, comparisons, 10), rel=1e-9)
    assert raters.weight("someone new") == 1.0


def test_an_honest_or_chance_user_weighs_one_and_one_who_disagrees_loses_weight_with_the_evidence() -> None:
    weights = {
        (a, n): Raters(LENGTH, RaterConfig(), {"u": RaterCounts(a, n)}).weight("u")
        for a, n in [(0, 0), (5, 10), (7, 10), (3, 10), (6, 20), (9, 30)]
    }
    assert weights[(0, 0)] == weights[(5, 10)] == weights[(7, 10)] == 1.0  # no evidence, chance, honest
    # The numbers the module's docstring gives.
    assert (weights[(3, 10)], weights[(6, 20)], weights[(9, 30)]) == pytest.approx((0.36, 0.14, 0.05), abs=0.005)


def test_a_pair_agrees_when_the_judge_scores_the_chosen_answer_higher_and_a_tie_is_no_comparison() -> None:
    raters = Raters(LENGTH, RaterConfig(), {})
    raters.observe(pair("honest", "a long answer", "short"))
    raters.observe(pair("contrarian", "short", "a long answer"))
    raters.observe(pair("contrarian", "same", "size"))  # the judge ties: no comparison
    tie = pair("contrarian", "x", "y")
    tie.label.pairwise.tie = True
    raters.observe(tie)
    assert raters.counts["honest"] == RaterCounts(agreements=1, comparisons=1)
    assert raters.counts["contrarian"] == RaterCounts(agreements=0, comparisons=1)


def test_a_thumb_or_rating_is_compared_with_the_users_last_verdict_of_the_other_polarity() -> None:
    raters = Raters(LENGTH, RaterConfig(), {})
    raters.observe(thumb("u", "meh", up=False))  # nothing of the other polarity yet: no comparison
    assert raters.counts["u"] == RaterCounts(0, 0, last_up=None, last_down=3.0)
    raters.observe(thumb("u", "a fine answer", up=True))  # up on 13 above the last down on 3: agrees
    raters.observe(rating("u", "no", 2))  # a down on 2 below the last up on 13: agrees
    raters.observe(rating("u", "a much longer answer", 5))  # up on 20 above the last down on 2: agrees
    raters.observe(rating("u", "whatever it is, three", 3))  # a 3 is no verdict
    raters.observe(thumb("u", "a very very long answer", up=False))  # down on 23 above the last up (20)
    assert raters.counts["u"] == RaterCounts(3, 4, last_up=20.0, last_down=23.0)


def test_a_failing_judge_is_reported_and_the_event_is_not_counted(caplog: pytest.LogCaptureFixture) -> None:
    def broken(prompt: list[dict[str, str]], response: str) -> float:
        raise RuntimeError("rubric service down")

    raters = Raters(checked(broken, "rubrics:score"), RaterConfig(), {})
    with caplog.at_level(logging.WARNING, logger="learner.online.raters"):
        raters.observe(pair("u", "a", "b"))
        raters.observe(pair("u", "a", "b"))
    assert raters.counts == {} and raters.failures == 2
    assert [r.getMessage() for r in caplog.records] == [
        "rater agreement: the judge failed 1 time(s); latest: scorer rubrics:score raised RuntimeError: rubric"
        " service down (prompt 'Hi')"
    ]


def test_raters_are_off_without_a_scorer_judge_or_when_configured_off_and_say_which() -> None:
    said: list[str] = []
    judged = EvaluationSuite(name="test", judge=Judge("by length", scorer=LENGTH))
    by_version = EvaluationSuite(name="test", judge=Judge("reward model ver_1", reward_version="ver_1"))
    assert Raters.for_suite(judged, RaterConfig(), {}, said.append) is not None
    assert Raters.for_suite(judged, RaterConfig(judge="off"), {}, said.append) is None
    assert Raters.for_suite(EvaluationSuite(name="test"), RaterConfig(), {}, said.append) is None
    assert Raters.for_suite(by_version, RaterConfig(), {}, said.append) is None
    assert said == [
        "rater agreement: users weighted by how often their votes agree with by length",
        "rater agreement off (learner.online.raters.judge is off): every user weighs 1",
        "rater agreement off (suite test has no judge): every user weighs 1",
        "rater agreement off (the judge of suite test (reward model ver_1) is not a scorer function): every user"
        " weighs 1",
    ]


def test_in_the_world_honest_users_keep_their_weight_and_adversarial_ones_lose_it() -> None:
    """The world's users (label noise included) voting as in the demo on answers of every style, judged by
    the world suite's gold reward: after 40 votes each, what their weights are."""
    world = default_world()
    config = load_config(path=None, environ={"TRIMTAB_WORLD__USERS__ADVERSARIAL_SHARE": "0.4"})
    suite = world_suite(config)
    population = Population.build(config.world.users, seed=config.world.seed)
    raters = Raters.for_suite(suite, RaterConfig(), {}, say=print)
    assert raters is not None
    rng = random.Random(3)
    for user in population.users:
        for _ in range(40):
            prompt = world.sample_prompt(rng)
            a, b = (world.render(prompt, world.sample_style(rng), rng) for _ in range(2))
            score_a, score_b = world.score(prompt.text, a), world.score(prompt.text, b)
            kind = rng.choice(["pairwise", "thumb", "rating"])
            if kind == "pairwise":
                chosen_a = user.prefer(score_a, score_b, rng) is Preference.A
                event = pair(user.user_id, *((a, b) if chosen_a else (b, a)))
            elif kind == "thumb":
                event = thumb(user.user_id, a, user.thumb(score_a, rng))
            else:
                event = rating(user.user_id, a, user.rate(score_a, rng))
            event.served.prompt.chat.messages[0].content = prompt.text
            raters.observe(event)
    honest = [raters.weight(u.user_id) for u in population.honest]
    adversarial = [raters.weight(u.user_id) for u in population.adversarial]
    assert len(adversarial) == 20 and len(honest) == 30
    assert min(honest) > 0.9
    assert max(adversarial) < 0.3 and sum(adversarial) / len(adversarial) < 0.1


def test_the_counts_travel_in_the_learners_memory() -> None:
    memory = LearnerMemory(raters={"u": RaterCounts(3, 7, last_up=1.5, last_down=None)})
    assert LearnerMemory.from_json(memory.to_json()).raters == memory.raters


@pytest.mark.integration
def test_a_round_weighs_each_users_items_and_the_canary_their_verdicts_by_their_agreement(
    stack: TrimtabConfig, tmp_path: Path
) -> None:
    """Through `FeedbackSource` on the real broker: a user who always chooses the answer the judge scores
    lower trains at a small weight, and their thumbs count at it in the canary; an honest user's at 1."""
    from learner.distributed import init_distributed, shutdown
    from learner.online.canary import CanaryJudge
    from learner.online.loop import OnlineRequest, _start
    from learner.online.source import FeedbackSource
    from learner.online.telemetry import LearnerTelemetry

    config = load_config(
        path=None,
        environ=small_learner_env(stack, tmp_path, partitions=1)
        | {"TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES": "48", "TRIMTAB_LEARNER__ONLINE__ROUND__MAX_USER_SHARE": "1"},
    )
    ensure_topics(config.kafka)
    context = init_distributed(config.learner)  # a one-rank group: the source broadcasts the round's items
    reader = InMemoryMetricReader()
    telemetry = LearnerTelemetry(MeterProvider(metric_readers=[reader]).get_meter("test"))
    run = _start(config, OnlineRequest(make_tiny_model(tmp_path / "model")), Console(file=io.StringIO()), context,
                 telemetry)  # fmt: skip
    run = replace(run, suite=EvaluationSuite(name="test", judge=Judge("by length", scorer=LENGTH)))
    events = [pair("honest", "a longer answer", "short") for _ in range(20)]
    events += [pair("contrarian", "short", "a longer answer") for _ in range(20)]
    # Thumbs on the canary after the pairs: the honest user's downs, the contrarian's ups.
    events += [thumb(user, "short", up=user == "contrarian") for user in ("honest", "contrarian") for _ in range(4)]
    for event in events:
        event.served.candidates[0].reply.model_version = "ver_canary"
    producer = event_producer(config.kafka, "test")
    for event in events:
        send_event(producer, config.kafka.topics.feedback.name, event.feedback_id, event)
    producer.flush()
    producer.close()

    memory = LearnerMemory(replay=Replay(10, seed=0))
    judge = CanaryJudge(config)
    try:
        with closing(FeedbackSource(run, memory, judge)) as source:
            items = next(source.rounds())
    finally:
        shutdown(context)
    assert len(items) == 48
    assert memory.raters["honest"] == RaterCounts(20, 20, last_up=None, last_down=5.0)
    assert memory.raters["contrarian"] == RaterCounts(0, 20, last_up=5.0, last_down=None)
    contrarian = Raters(LENGTH, RaterConfig(), memory.raters).weight("contrarian")
    assert contrarian == pytest.approx(exact_weight(0, 20, 10)) and contrarian < 1e-3
    assert {(item.user_id, item.weight) for item in items} == {("honest", 1.0), ("contrarian", contrarian)}
    tally = judge.verdicts["ver_canary"]  # 4 downs at 1, 4 ups at the contrarian's weight
    assert (tally.total - tally.up, tally.up) == (pytest.approx(4.0), pytest.approx(4 * contrarian))
    bands = {series(weight="full"): 1, series(weight="reduced"): 0, series(weight="low"): 1}
    assert metric_points(reader, "trimtab.learner.raters") == bands
