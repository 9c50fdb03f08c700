"""The second-vote rule: a user's latest vote of a kind on a response (or pair) wins.

A user may change their mind. Every submission with a new feedback_id is accepted and written; when
it is a vote of the same kind by the same user on the same target as an earlier one, its
FeedbackEvent.supersedes names the earlier vote's feedback_id, and the learner drops the earlier
event if it has not trained on it yet (or counts the later as an update). The chain of `supersedes`
links, not the topic order, says which vote is the latest: links are assigned atomically in Redis
when a submission is admitted.

Targets: thumb, rating, attributes and correction are per response; pairwise is per unordered pair
(A>B then B>A on the same two responses is a change of mind; a tie is a vote too). Comments never
supersede anything: each is kept.
"""

from __future__ import annotations

from feedback.validation import kind_of
from trimtab.v1 import feedback_pb2

SUPERSEDING_KINDS = frozenset({"thumb", "pairwise", "rating", "attributes", "correction"})


def vote_target(request: feedback_pb2.SubmitRequest) -> str | None:
    """What the submission votes on, e.g. 'thumb:resp_1' or 'pairwise:resp_1:resp_2'; None for comments."""
    kind = kind_of(request)
    if kind not in SUPERSEDING_KINDS:
        return None
    if kind == "pairwise":
        pair = request.label.pairwise
        first, second = sorted((pair.chosen_response_id, pair.rejected_response_id))
        return f"pairwise:{first}:{second}"
    return f"{kind}:{request.response_id}"
