"""The agreement score, the flag and the training cap, as numbers."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from feedback.abuse import UserCounts, agreement_tail, content, is_flagged, polarity, signals
from tests.feedback.support import label, response_ids, response_record
from trimtab.config.feedback import AgreementConfig, FeedbackConfig, TrainingCap
from trimtab.v1 import feedback_pb2


def submission(response_id: str = "r1", **kind: object) -> feedback_pb2.SubmitRequest:
    return feedback_pb2.SubmitRequest(feedback_id="f", user_id="u", response_id=response_id, label=label(**kind))


def test_binomial_tail_is_exact_for_small_counts() -> None:
    assert agreement_tail(0, 10) == 1 / 1024
    assert agreement_tail(2, 20) == (1 + 20 + 190) / 2**20
    assert agreement_tail(10, 10) == 1.0
    assert agreement_tail(5, 10) == pytest.approx(638 / 1024)


def exact(agreements: int, comparable: int) -> float:
    return float(Fraction(sum(math.comb(comparable, i) for i in range(agreements + 1)), 2**comparable))


@pytest.mark.parametrize("comparable", [1, 2, 3, 10, 11, 40, 101, 999, 1000])
def test_binomial_tail_is_the_exact_sum_up_to_1000_votes(comparable: int) -> None:
    for agreements in sorted({0, 1, comparable // 2 - 1, comparable // 2, comparable // 2 + 1, comparable - 1}):
        if agreements >= 0:
            assert agreement_tail(agreements, comparable) == pytest.approx(exact(agreements, comparable), rel=1e-12)


def test_binomial_tail_switches_to_the_normal_approximation_above_1000_votes() -> None:
    assert agreement_tail(450, 1000) == pytest.approx(exact(450, 1000), rel=1e-9)
    assert agreement_tail(930, 2000) == pytest.approx(exact(930, 2000), rel=0.02)
    assert agreement_tail(1000, 2000) == pytest.approx(exact(1000, 2000), rel=0.01)


@pytest.mark.parametrize(("agreements", "comparable", "flagged"), [(0, 10, True), (1, 10, False), (2, 20, True),
                                                                   (3, 20, False), (9, 40, True), (10, 40, False),
                                                                   (25, 80, True), (0, 9, False)])  # fmt: skip
def test_default_flag_thresholds(agreements: int, comparable: int, flagged: bool) -> None:
    assert is_flagged(UserCounts(1, comparable, agreements), AgreementConfig()) is flagged


def test_polarity_is_on_the_content_judged_not_on_response_ids() -> None:
    served = response_record()
    first, second = response_ids(served)
    target = f"response:{content(served, first)}"
    assert polarity(submission(first, thumb=feedback_pb2.THUMB_UP), served) == (target, 1)
    assert polarity(submission(first, thumb=feedback_pb2.THUMB_DOWN), served) == (target, -1)
    assert polarity(submission(first, rating=5), served) == (target, 1)
    assert polarity(submission(first, rating=2), served) == (target, -1)
    assert polarity(submission(first, rating=3), served) is None
    assert polarity(submission(first, comment="meh"), served) is None
    same_answer_elsewhere = response_record(user_id="someone-else")
    assert content(same_answer_elsewhere, response_ids(same_answer_elsewhere)[0]) == content(served, first)
    assert content(served, second) != content(served, first)


def test_pairwise_polarity_is_on_the_unordered_pair_of_contents() -> None:
    served = response_record()
    first, second = response_ids(served)
    one_way = polarity(submission("", pairwise=feedback_pb2.Pairwise(chosen_response_id=first,
                                                                   rejected_response_id=second)), served)  # fmt: skip
    other_way = polarity(submission("", pairwise=feedback_pb2.Pairwise(chosen_response_id=second,
                                                                     rejected_response_id=first)), served)  # fmt: skip
    assert one_way is not None and other_way is not None
    assert one_way[0] == other_way[0] and one_way[1] == -other_way[1]
    tie = feedback_pb2.Pairwise(chosen_response_id=first, rejected_response_id=second, tie=True)
    assert polarity(submission("", pairwise=tie), served) is None
    served.candidates[1].reply.text = served.candidates[0].reply.text
    same_text = feedback_pb2.Pairwise(chosen_response_id=first, rejected_response_id=second)
    assert polarity(submission("", pairwise=same_text), served) is None


def test_signals_carry_score_flag_cap_and_weight() -> None:
    config = FeedbackConfig(training_cap=TrainingCap(max_events=5))
    quiet = signals(UserCounts(1, 3, 0), config)
    assert not quiet.user_flagged and not quiet.HasField("agreement_score") and not quiet.HasField("weight")
    honest = signals(UserCounts(5, 20, 15), config)
    assert honest.agreement_score == 0.75 and not honest.user_flagged and not honest.HasField("weight")
    contrarian = signals(UserCounts(5, 20, 1), config)
    assert contrarian.user_flagged and contrarian.weight == pytest.approx(0.1)
    over_cap = signals(UserCounts(6, 20, 1), config)
    assert over_cap.over_training_cap and over_cap.weight == 0.0
