"""Each user's weight from how often their own comparisons agree with an independent judge.

The feedback service's agreement score compares a user with the other users who voted on the same
answer; in a small deployment with sampled answers that hardly ever happens (0 of 1,800 events in a
demo carried one), and where adversarial users are the majority they define "the population". Here
the reference is the operator's judge instead (`suite.judge`, a scorer function), which no user can
outvote. It never sees a user's threshold, so it is asked only what it can answer, an order:

- a pairwise choice (not a tie) is a comparison: it agrees if the judge scores the chosen answer higher;
- a thumb, a 1-5 rating read as up (4-5) or down (1-2), or a SteerLM helpfulness score read as up (3-4) or
  down (0-1) is compared with the same user's last verdict of the other polarity: an up agrees if the
  judge scores its answer above that user's last down, a down if below their last up. A user who voted
  only one way has no comparison yet.

Equal scores are no comparison. With a agreements of n comparisons and a Beta(k/2, k/2) prior on the
user's agreement rate q (k = `prior_votes`), the weight is

    w = min(1, 2 P(q > 1/2 | a, n)),  q | a, n ~ Beta(k/2 + a, k/2 + n - a)

so a new user, an honest one and one who agrees at chance all weigh 1 (a coin is noise, not an attack),
and the weight falls towards 0 as the evidence that a user agrees *less* than chance grows: 0.36 after 3
agreements of 10, 0.14 after 6 of 20, 0.05 after 9 of 30 (k = 10). It multiplies the event's abuse weight
in the round's items (`weighted`, when a round is taken: a user's earlier votes get the weight their later
ones earned; replayed items keep theirs) and in the canary's tally. Only rank 0 reads the stream; the
counts travel in the checkpoint.

Known limit: the judge is trusted. An operator without one (or one whose judge is the learner's own
reward model, trained on the same feedback) runs with `raters.judge: off`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from scipy.special import betainc

from learner.online.canary import verdict
from learner.online.items import Item
from trimtab.config.online import RaterConfig
from trimtab.jsonl import Messages
from trimtab.suite import EvaluationSuite
from trimtab.suite.contract import Scorer
from trimtab.suite.judge import JudgeError
from trimtab.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass
class RaterCounts:
    """One user's comparisons with the judge, and the judge's scores of their last up and last down."""

    agreements: int = 0
    comparisons: int = 0
    last_up: float | None = None
    last_down: float | None = None


class Raters:
    """The users' agreement with `scorer`; `counts` (user id -> RaterCounts) is the caller's, updated in
    place (the learner's memory, so it is checkpointed)."""

    def __init__(self, scorer: Scorer, config: RaterConfig, counts: dict[str, RaterCounts]) -> None:
        self.scorer, self.config, self.counts = scorer, config, counts
        self.failures = 0

    @classmethod
    def for_suite(
        cls, suite: EvaluationSuite, config: RaterConfig, counts: dict[str, RaterCounts], say: Callable[[str], None]
    ) -> Raters | None:
        """The suite judge's raters, or None when off or the suite has no scorer; `say` is told which."""
        judge = suite.judge
        if config.judge == "off" or judge is None or judge.scorer is None:
            why = (
                "learner.online.raters.judge is off"
                if config.judge == "off"
                else f"suite {suite.name} has no judge"
                if judge is None
                else f"the judge of suite {suite.name} ({judge.name}) is not a scorer function"
            )
            say(f"rater agreement off ({why}): every user weighs 1")
            return None
        say(f"rater agreement: users weighted by how often their votes agree with {judge.name}")
        return cls(judge.scorer, config, counts)

    def observe(self, event: events_pb2.FeedbackEvent) -> None:
        """Count the comparison the event makes, if any."""
        try:
            agreed = self._compare(event)
        except JudgeError as exc:  # the operator's scorer: report and go on; the event still trains
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("rater agreement: the judge failed %d time(s); latest: %s", self.failures, exc)
            return
        if agreed is not None:
            counts = self.counts.setdefault(event.user_id, RaterCounts())
            counts.comparisons += 1
            counts.agreements += agreed

    def weight(self, user_id: str) -> float:
        counts = self.counts.get(user_id)
        if counts is None:
            return 1.0
        half = self.config.prior_votes / 2
        # P(q > 1/2) for q ~ Beta(a, b) is I_{1/2}(b, a), the regularised incomplete beta function.
        above_half = float(betainc(half + counts.comparisons - counts.agreements, half + counts.agreements, 0.5))
        return min(1.0, 2.0 * above_half)

    def weighted(self, items: Sequence[Item]) -> list[Item]:
        """`items` with each weight multiplied by its user's weight now."""
        return [replace(item, weight=item.weight * self.weight(item.user_id)) for item in items]

    def weights(self) -> list[float]:
        """Every counted user's weight now."""
        return [self.weight(user) for user in self.counts]

    def _compare(self, event: events_pb2.FeedbackEvent) -> bool | None:
        label, served = event.label, event.served
        if served.prompt.WhichOneof("kind") != "chat":
            return None
        prompt: Messages = [{"role": m.role, "content": m.content} for m in served.prompt.chat.messages]
        kind = label.WhichOneof("kind")
        if kind == "pairwise" and not label.pairwise.tie:
            chosen = _text(served, label.pairwise.chosen_response_id)
            rejected = _text(served, label.pairwise.rejected_response_id)
            if chosen is None or rejected is None:
                return None
            return _order(self.scorer(prompt, chosen), self.scorer(prompt, rejected))
        up = verdict(label, ratings=True, helpfulness=True)
        text = _text(served, event.response_id)
        if up is None or text is None:
            return None
        score = self.scorer(prompt, text)
        counts = self.counts.setdefault(event.user_id, RaterCounts())
        if up:
            agreed = None if counts.last_down is None else _order(score, counts.last_down)
            counts.last_up = score
        else:
            agreed = None if counts.last_up is None else _order(counts.last_up, score)
            counts.last_down = score
        return agreed


def _order(higher: float, lower: float) -> bool | None:
    """Whether the judge puts `higher` above `lower` (None: a tie, no comparison)."""
    return None if higher == lower else higher > lower


def _text(served: events_pb2.ResponseLogged, response_id: str) -> str | None:
    return next((c.reply.text for c in served.candidates if c.reply.response_id == response_id), None)
