"""Poisoning limits on what reaches training: the per-user training cap and the agreement score.

Agreement. A vote has a polarity on a target: thumb up (+1) / down (-1) on a response, a rating of
4-5 (+1) or 1-2 (-1; 3 is neutral and not compared), and a non-tie pairwise choice on an unordered
pair (+1 if the first of the two, in a fixed order, won). The target is the response's CONTENT (the
prompt and the response text), not its id: only the served user may vote on a response unless the
tenant allows raters, so "the population" is everyone who voted on the same answer to the same
prompt, whoever was served it (raters of one response included). When a user votes on a target for
the first time and at least `min_population_votes` OTHER users have voted on it with a strict
majority, the vote is comparable: it agrees if its polarity matches the majority's. A user's agreement score is
agreements / comparable votes, reported once they have `min_comparable_votes`.

Flag. A user voting at random agrees with the majority about half the time; an honest user more
often. A user is flagged when they have at least `min_comparable_votes` comparable votes and so few
agreements that a coin would produce that few with probability below `flag_p_value` (exact one-sided
binomial tail, p = 0.5). Defaults (10 votes, p < 0.001): flagged at 0/10, 2/20, 9/40, 25/80,
450/1000 agreements or fewer; a random voter is wrongly flagged about once in a thousand. The flag rides on each event
(AbuseSignals.user_flagged, weight = `flagged_weight`) so the learner can down-weight the user; the
feedback is still accepted. Known limit: a coordinated group that forms the majority on a target
defines "the population" there.

Training cap. At most `training_cap.max_events` trainable submissions (everything but comments) per
user per sliding window reach training; beyond it feedback is still accepted and written, marked
`over_training_cap` with weight 0.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from feedback.validation import kind_of
from trimtab.config.feedback import AgreementConfig, FeedbackConfig
from trimtab.v1 import events_pb2, feedback_pb2

_NORMAL_FROM = 1000  # above this many votes, the binomial tail by its normal approximation


@dataclass(frozen=True)
class UserCounts:
    """What Redis counted for a user when a submission was admitted."""

    trainable_in_window: int  # this submission included; 0 for comments
    comparable: int
    agreements: int


def polarity(request: feedback_pb2.SubmitRequest, served: events_pb2.ResponseLogged) -> tuple[str, int] | None:
    """(target, +1 or -1) for votes that can be compared with the population; None otherwise."""
    kind = kind_of(request)
    label = request.label
    if kind == "thumb":
        return f"response:{content(served, request.response_id)}", 1 if label.thumb == feedback_pb2.THUMB_UP else -1
    if kind == "rating" and label.rating != 3:
        return f"response:{content(served, request.response_id)}", 1 if label.rating > 3 else -1
    if kind == "pairwise" and not label.pairwise.tie:
        chosen = content(served, label.pairwise.chosen_response_id)
        rejected = content(served, label.pairwise.rejected_response_id)
        if chosen == rejected:  # two identical answers: the choice says nothing about content
            return None
        first, second = sorted((chosen, rejected))
        return f"pair:{first}:{second}", 1 if chosen == first else -1
    return None


def content(served: events_pb2.ResponseLogged, response_id: str) -> str:
    """A digest of what was judged: the prompt and the response's text."""
    text = next((c.reply.text for c in served.candidates if c.reply.response_id == response_id), "")
    digest = hashlib.sha256(served.prompt.SerializeToString(deterministic=True))
    digest.update(b"\x00" + text.encode())
    return digest.hexdigest()[:32]


def is_trainable(request: feedback_pb2.SubmitRequest) -> bool:
    return kind_of(request) != "comment"


def agreement_tail(agreements: int, comparable: int) -> float:
    """P(X <= agreements) for X ~ Binomial(comparable, 1/2): how likely this few agreements are by chance."""
    if agreements >= comparable:
        return 1.0
    if comparable <= _NORMAL_FROM:
        # Exact: sum C(n, i) over the shorter side (at p = 1/2, P(X <= k) = 1 - P(X <= n - k - 1)), each
        # term from the one before. A sum of math.comb calls over i <= k took 10-24 ms at n = 1,000 on the
        # event loop, for every submission of a user with that many comparable votes; this takes 0.03-0.2 ms.
        shorter = min(agreements, comparable - agreements - 1)
        term = total = 1
        for i in range(shorter):
            term = term * (comparable - i) // (i + 1)
            total += term
        tail = total / 2**comparable  # int / int: correctly rounded however large
        return tail if shorter == agreements else 1.0 - tail
    z = (agreements + 0.5 - comparable / 2) / math.sqrt(comparable / 4)  # continuity-corrected
    return 0.5 * math.erfc(-z / math.sqrt(2))


def is_flagged(counts: UserCounts, config: AgreementConfig) -> bool:
    if counts.comparable < config.min_comparable_votes:
        return False
    return agreement_tail(counts.agreements, counts.comparable) < config.flag_p_value


def signals(counts: UserCounts, config: FeedbackConfig) -> events_pb2.AbuseSignals:
    """The AbuseSignals carried on the event."""
    result = events_pb2.AbuseSignals(user_flagged=is_flagged(counts, config.agreement))
    if counts.comparable >= config.agreement.min_comparable_votes:
        result.agreement_score = counts.agreements / counts.comparable
    result.over_training_cap = counts.trainable_in_window > config.training_cap.max_events
    if result.over_training_cap:
        result.weight = 0.0
    elif result.user_flagged:
        result.weight = config.agreement.flagged_weight
    return result
