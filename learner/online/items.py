"""From a FeedbackEvent to what the learner may train on: one `Item`, or the reason it is not trained.

Every event carries the response record it judges (`served`: prompt, candidates, the versions that
produced them, the serving-time token log-probs), so nothing has to be looked up. The rules:

- pairwise -> a preference pair (chosen, rejected) for DPO/IPO, and for the reward model (Bradley-Terry);
  a tie carries no preference.
- rating -> the reward model, the rating (1-5) as the probability of beating a reference answer
  (`learner.losses.rating_loss`).
- thumb -> a KTO example (up: desirable); correction -> an SFT example with the user's text;
  attributes -> a SteerLM example (the scores rendered into the prompt, as serving renders targets).
- Abuse signals: an event over the user's training cap is not trained; otherwise it is weighted by
  `abuse.weight` (unset = 1; the feedback service lowers it for flagged users).
- Guardrails: positive feedback (a thumb up, or the chosen side of a pair) on a response that an
  output rail stopped is never trained as positive: `guardrails.training.training_label` drops it
  or turns it against that response, by `guardrails.feedback_filter`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from google.protobuf.json_format import MessageToDict

from guardrails.training import FilterPolicy, Use, training_label
from learner.batching import Messages
from trimtab.config.online import FeedbackMix
from trimtab.events import RATING_MAX, RATING_MIN
from trimtab.steerlm import with_attributes
from trimtab.suite import Demonstration
from trimtab.v1 import events_pb2, feedback_pb2


@dataclass(frozen=True, kw_only=True)
class Item:
    """One trainable piece of feedback (built by keyword: ten fields, several of one type)."""

    algorithms: tuple[str, ...]  # what trains on it: "dpo", "ipo", "kto", "sft", "steerlm"; "rm", "rm_rating"
    prompt: Messages
    responses: tuple[str, ...]  # (chosen, rejected) for pairs, else (response,)
    desirable: bool
    weight: float
    user_id: str
    feedback_id: str
    versions: tuple[str, ...]  # the version that produced each response
    behaviour_logps: tuple[float, ...] | None  # summed serving-time log-probs of each response, when recorded
    target: float = 0.0  # a rating scaled to [0, 1], the reward model's target (rm_rating)
    accepted_at: float = 0.0  # unix seconds when the feedback service accepted it (0: not feedback)


@dataclass(frozen=True)
class Skipped:
    reason: str  # a short, countable reason


@dataclass
class ItemFactory:
    mix: FeedbackMix
    rail_policy: FilterPolicy = "drop"
    counts: dict[str, int] = field(default_factory=dict)  # reason -> events skipped (or flipped) for it

    def build(self, event: events_pb2.FeedbackEvent) -> Item | Skipped:
        result = self._build(event)
        if isinstance(result, Skipped):
            self.counts[result.reason] = self.counts.get(result.reason, 0) + 1
        return result

    def _build(self, event: events_pb2.FeedbackEvent) -> Item | Skipped:
        if event.abuse.over_training_cap:
            return Skipped("over_training_cap")
        served = event.served
        if served.prompt.WhichOneof("kind") != "chat":
            return Skipped("raw_prompt")  # no chat template to train it under
        prompt = _prompt(served)
        weight = event.abuse.weight if event.abuse.HasField("weight") else 1.0
        if weight <= 0:
            return Skipped("zero_weight")
        decision = training_label(event, self.rail_policy)
        if decision.use is Use.DROP:
            return Skipped("rail_violation_dropped")
        if decision.use is Use.FLIP:
            self.counts["rail_violation_flipped"] = self.counts.get("rail_violation_flipped", 0) + 1
        label = decision.label
        kind = label.WhichOneof("kind")
        accepted_at = event.accepted_at.ToNanoseconds() / 1e9
        common = Common(prompt, weight, event.user_id, event.feedback_id, accepted_at)
        if kind == "pairwise":
            return self._pair(served, label.pairwise, common)
        if kind == "rating" and not RATING_MIN <= label.rating <= RATING_MAX:
            return Skipped("rating_out_of_range")  # the feedback service refuses these; never trust the wire
        candidate = _candidate(served, event.response_id)
        if candidate is None:
            return Skipped("unknown_response")
        text, version, logps = candidate.reply.text, (candidate.reply.model_version,), _logps([candidate])
        if kind == "thumb" and self.mix.thumb != "off":
            up = label.thumb == feedback_pb2.THUMB_UP
            return common.item((self.mix.thumb,), (text,), version, logps, desirable=up)
        if kind == "correction" and self.mix.correction != "off":
            # The user's own text: no serving-time log-probs, no importance weight.
            return common.item((self.mix.correction,), (label.correction,), version, None)
        if kind == "attributes" and self.mix.attributes != "off":
            scores = {name: int(value) for name, value in MessageToDict(label.attributes).items()}
            steered = replace(common, prompt=with_attributes(prompt, scores))
            return steered.item((self.mix.attributes,), (text,), version, logps)
        if kind == "rating" and self.mix.rating != "off":
            # The reward model is not a policy trained on these samples: no importance weight (None).
            target = (label.rating - RATING_MIN) / (RATING_MAX - RATING_MIN)
            return common.item(("rm_rating",), (text,), version, None, target=target)
        return Skipped(f"{kind}_not_trained")

    def _pair(self, served: events_pb2.ResponseLogged, pair: feedback_pb2.Pairwise, common: Common) -> Item | Skipped:
        algorithms = (
            *(() if self.mix.pairwise == "off" else (self.mix.pairwise,)),
            *(("rm",) if self.mix.pairwise_reward_model else ()),
        )
        if not algorithms:
            return Skipped("pairwise_not_trained")
        if pair.tie:
            return Skipped("tie")
        chosen = _candidate(served, pair.chosen_response_id)
        rejected = _candidate(served, pair.rejected_response_id)
        if chosen is None or rejected is None:
            return Skipped("unknown_response")
        return common.item(
            algorithms,
            (chosen.reply.text, rejected.reply.text),
            (chosen.reply.model_version, rejected.reply.model_version),
            _logps([chosen, rejected]),
        )


@dataclass(frozen=True)
class Common:
    """What every item of one event shares."""

    prompt: Messages
    weight: float
    user_id: str
    feedback_id: str
    accepted_at: float

    def item(
        self,
        algorithms: tuple[str, ...],
        responses: tuple[str, ...],
        versions: tuple[str, ...],
        logps: tuple[float, ...] | None,
        desirable: bool = True,
        target: float = 0.0,
    ) -> Item:
        return Item(
            algorithms=algorithms,
            prompt=self.prompt,
            responses=responses,
            desirable=desirable,
            weight=self.weight,
            user_id=self.user_id,
            feedback_id=self.feedback_id,
            versions=versions,
            behaviour_logps=logps,
            target=target,
            accepted_at=self.accepted_at,
        )


def _prompt(served: events_pb2.ResponseLogged) -> list[dict[str, str]]:
    messages = [{"role": m.role, "content": m.content} for m in served.prompt.chat.messages]
    targets = {name: int(value) for name, value in MessageToDict(served.steer_targets).items()}
    # The model answered the conversation as conditioned on the requested attributes: train it so too.
    return with_attributes(messages, targets)


def _candidate(served: events_pb2.ResponseLogged, response_id: str) -> events_pb2.CandidateRecord | None:
    return next((c for c in served.candidates if c.reply.response_id == response_id), None)


def _logps(candidates: list[events_pb2.CandidateRecord]) -> tuple[float, ...] | None:
    if any(not c.token_logprobs for c in candidates):
        return None
    return tuple(float(sum(c.token_logprobs)) for c in candidates)


def anchor_items(anchors: Sequence[Demonstration]) -> list[Item]:
    """The suite's anchor demonstrations as items, trained by SFT every round."""
    return [
        Item(
            algorithms=("sft",),
            prompt=list(anchor.prompt),
            responses=(anchor.response,),
            desirable=True,
            weight=1.0,
            user_id="anchor",
            feedback_id=f"anchor-{i}",
            versions=(),
            behaviour_logps=None,
        )
        for i, anchor in enumerate(anchors)
    ]
