"""The second-vote rule's targets: what counts as voting again on the same thing."""

from __future__ import annotations

from feedback.votes import vote_target
from tests.feedback.support import attributes, label
from trimtab.v1 import feedback_pb2


def submission(response_id: str = "r1", **kind: object) -> feedback_pb2.SubmitRequest:
    return feedback_pb2.SubmitRequest(feedback_id="f", user_id="u", response_id=response_id, label=label(**kind))


def test_votes_on_one_response_are_per_kind() -> None:
    assert vote_target(submission(thumb=feedback_pb2.THUMB_UP)) == vote_target(
        submission(thumb=feedback_pb2.THUMB_DOWN)
    )
    assert vote_target(submission(thumb=feedback_pb2.THUMB_UP)) == "thumb:r1"
    assert vote_target(submission(rating=2)) == "rating:r1"
    assert vote_target(submission(attributes=attributes(helpfulness=1))) == "attributes:r1"
    assert vote_target(submission(correction="8")) == "correction:r1"
    assert vote_target(submission("r2", rating=2)) == "rating:r2"


def test_a_pair_is_unordered_and_ties_vote_on_it_too() -> None:
    a_over_b = feedback_pb2.Pairwise(chosen_response_id="a", rejected_response_id="b")
    b_over_a = feedback_pb2.Pairwise(chosen_response_id="b", rejected_response_id="a")
    tie = feedback_pb2.Pairwise(chosen_response_id="b", rejected_response_id="a", tie=True)
    targets = {vote_target(submission("", pairwise=pair)) for pair in (a_over_b, b_over_a, tie)}
    assert targets == {"pairwise:a:b"}


def test_comments_never_supersede() -> None:
    assert vote_target(submission(comment="nice")) is None
