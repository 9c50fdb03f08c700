"""The rails themselves: the custom actions the Colang flows execute, one per rail, and one per stage
that runs the policy's list of rails (`input_rails` / `output_rails`) as one action.

Each action returns `{"action": "allow" | "modify" | "block", "text": ...}` for its flow to act on
(refuse, or replace $user_message / $bot_message) and records its full Decision (reason code, score)
in the collector of the check that is running, which `Guardrails.check` reads back: NeMo's
`check_async` reports only the overall status and the name of a blocking flow.

A rail that fails blocks (reason `<rail>.error`): a check that cannot run must not let text through.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import numpy as np

from guardrails.decisions import Action, Decision, Stage
from guardrails.pii import find_pii
from guardrails.policy import RailPolicy
from guardrails.semantic import Embedder, ExampleIndex
from trimtab.suite import ProtectedTerms
from trimtab.textmatch import flexible_digits, marker_pattern

log = logging.getLogger(__name__)
MAX_SENTENCES = 32  # a longer text is judged on its first sentences and as a whole
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")

ActionResult = dict[str, str]
Rail = Callable[[str], Awaitable[ActionResult]]
# Each action's decision and the text it handed on, for the check running in this context.
Collected = list[tuple[Decision, str]]
collector: contextvars.ContextVar[Collected | None] = contextvars.ContextVar("guardrail_decisions", default=None)


def sentences(text: str) -> list[str]:
    parts = [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]
    return parts[:MAX_SENTENCES]


@dataclass(frozen=True)
class Exemplars:
    """The example sentences the semantic rails compare with, embedded and indexed."""

    attacks: ExampleIndex
    topics: ExampleIndex
    toxic: ExampleIndex
    benign: ExampleIndex


class RailSet:
    """The actions of one policy, registered with NeMo under the names the flows in rails.co execute."""

    def __init__(self, policy: RailPolicy, embedder: Embedder, exemplars: Exemplars, protected: ProtectedTerms) -> None:
        self.policy = policy
        self._embedder = embedder
        self._exemplars = exemplars
        self._topic_keywords = [
            (topic.name, marker_pattern(topic.keywords)) for topic in policy.topics.blocked if topic.keywords
        ]
        terms = [*policy.blocklist.terms, *(protected.blocklist if policy.blocklist.suite_terms else ())]
        self._terms = marker_pattern(terms) if terms else None
        secrets = [*policy.secret.secrets, *(protected.secrets if policy.secret.suite_secrets else ())]
        self._secret_patterns = [pattern for secret in secrets for pattern in secret_patterns(secret)]

    def actions(self) -> dict[str, Callable[..., Awaitable[ActionResult]]]:
        return {
            "input_rails_check": self.input_rails_check,
            "output_rails_check": self.output_rails_check,
            "jailbreak_check": self.jailbreak_check,
            "pii_check": self.pii_check,
            "topics_check": self.topics_check,
            "blocklist_check": self.blocklist_check,
            "secret_check": self.secret_check,
            "toxicity_check": self.toxicity_check,
        }

    async def input_rails_check(self, text: str) -> ActionResult:
        rails: dict[str, Rail] = {
            "pii": lambda t: self.pii_check(Stage.INPUT.value, t),
            "jailbreak": self.jailbreak_check,
            "topics": self.topics_check,
        }
        return await _chain(text, [rails[name] for name in self.policy.input_rails])

    async def output_rails_check(self, text: str) -> ActionResult:
        rails: dict[str, Rail] = {
            "secret": self.secret_check,
            "blocklist": self.blocklist_check,
            "toxicity": self.toxicity_check,
            "pii": lambda t: self.pii_check(Stage.OUTPUT.value, t),
        }
        return await _chain(text, [rails[name] for name in self.policy.output_rails])

    async def jailbreak_check(self, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            nearest = self._nearest_attack(await self._embedder.embed(_candidates(text)))
            if nearest is not None and nearest >= self.policy.jailbreak.threshold:
                return Decision("jailbreak", Stage.INPUT, Action.BLOCK, "jailbreak.similar", nearest), text
            return Decision("jailbreak", Stage.INPUT, Action.ALLOW, score=nearest), text

        return await _run("jailbreak", Stage.INPUT, text, decide)

    async def pii_check(self, stage: str, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            found = find_pii(text, self.policy.pii.entities, self.policy.pii.card_luhn)
            if not found.kinds:
                return Decision("pii", Stage(stage), Action.ALLOW), text
            reason = f"pii.{found.kinds[0]}"
            mode = self.policy.pii.input if stage == Stage.INPUT else self.policy.pii.output
            if mode == "block":
                return Decision("pii", Stage(stage), Action.BLOCK, reason), text
            return Decision("pii", Stage(stage), Action.MODIFY, reason), found.masked

        return await _run("pii", Stage(stage), text, decide)

    async def topics_check(self, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            for name, pattern in self._topic_keywords:
                if pattern.search(text):
                    return Decision("topics", Stage.INPUT, Action.BLOCK, f"topic.{name}", 1.0), text
            nearest = self._nearest_topic(await self._embedder.embed(_candidates(text)))
            if nearest is not None and nearest[0] >= self.policy.topics.threshold:
                return Decision("topics", Stage.INPUT, Action.BLOCK, f"topic.{nearest[1]}", nearest[0]), text
            return Decision("topics", Stage.INPUT, Action.ALLOW, score=nearest[0] if nearest else None), text

        return await _run("topics", Stage.INPUT, text, decide)

    async def blocklist_check(self, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            if self._terms is None or not self._terms.search(text):
                return Decision("blocklist", Stage.OUTPUT, Action.ALLOW), text
            if self.policy.blocklist.action == "block":
                return Decision("blocklist", Stage.OUTPUT, Action.BLOCK, "blocklist.term"), text
            masked = self._terms.sub(lambda m: "*" * len(m.group()), text)
            return Decision("blocklist", Stage.OUTPUT, Action.MODIFY, "blocklist.term"), masked

        return await _run("blocklist", Stage.OUTPUT, text, decide)

    async def secret_check(self, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            if not any(pattern.search(text) for pattern in self._secret_patterns):
                return Decision("secret", Stage.OUTPUT, Action.ALLOW), text
            if self.policy.secret.action == "block":
                return Decision("secret", Stage.OUTPUT, Action.BLOCK, "secret.leak"), text
            masked = text
            for pattern in self._secret_patterns:
                masked = pattern.sub("[SECRET]", masked)
            return Decision("secret", Stage.OUTPUT, Action.MODIFY, "secret.leak"), masked

        return await _run("secret", Stage.OUTPUT, text, decide)

    async def toxicity_check(self, text: str) -> ActionResult:
        async def decide() -> tuple[Decision, str]:
            score = self.toxicity_score(await self._embedder.embed(sentences(text)))
            if score >= self.policy.toxicity.threshold:
                return Decision("toxicity", Stage.OUTPUT, Action.BLOCK, "toxicity.score", score), text
            return Decision("toxicity", Stage.OUTPUT, Action.ALLOW, score=score), text

        return await _run("toxicity", Stage.OUTPUT, text, decide)

    # Scores from embeddings: a faiss search over a few hundred examples, cheap enough for the event loop.

    def _nearest_attack(self, vectors: np.ndarray) -> float | None:
        """The highest similarity of the whole text, or of any of its sentences (`vectors`: their
        embeddings), to a known attack: an attack wrapped in harmless sentences is still found."""
        scores = [n.score for n in self._exemplars.attacks.nearest(vectors) if n is not None]
        return max(scores) if scores else None

    def _nearest_topic(self, vectors: np.ndarray) -> tuple[float, str] | None:
        found = [n for n in self._exemplars.topics.nearest(vectors) if n is not None]
        best = max(found, key=lambda n: n.score, default=None)
        return (best.score, best.label) if best is not None else None

    def toxicity_score(self, vectors: np.ndarray) -> float:
        """max over sentences (`vectors`: their embeddings) of sigmoid((s_toxic - s_benign) / temperature),
        where s_x is the cosine similarity to the nearest toxic / harmless example: 0.5 when a sentence is
        as close to both."""
        if len(vectors) == 0:
            return 0.0
        toxic = self._exemplars.toxic.nearest(vectors)
        benign = self._exemplars.benign.nearest(vectors)
        scores = []
        for t, b in zip(toxic, benign, strict=True):
            margin = (t.score if t else -1.0) - (b.score if b else -1.0)
            scores.append(1.0 / (1.0 + math.exp(-margin / self.policy.toxicity.temperature)))
        return max(scores)


def _candidates(text: str) -> list[str]:
    """What the similarity rails embed: the whole text and each of its sentences, once each."""
    return list(dict.fromkeys([text, *sentences(text)]))


def secret_patterns(secret: str) -> list[re.Pattern[str]]:
    """The secret itself (any case), and each run of 4+ digits in it typed with or without separators: a
    code is leaked as much by its number alone ("5974", "5 9 7 4") as by the whole string."""
    runs = re.findall(r"\d{4,}", secret)
    return [re.compile(re.escape(secret), re.IGNORECASE), *(flexible_digits(run) for run in runs)]


async def _chain(text: str, rails: list[Rail]) -> ActionResult:
    """The rails in order, as their flows one after the other would run them: each sees the text the
    one before handed on, and the first block ends the chain (every rail records its own decision)."""
    handed_on = text
    for rail in rails:
        result = await rail(handed_on)
        if result["action"] == Action.BLOCK.value:
            return result
        handed_on = result["text"]
    return {"action": (Action.ALLOW if handed_on == text else Action.MODIFY).value, "text": handed_on}


async def _run(
    rail: str, stage: Stage, text: str, decide: Callable[[], Awaitable[tuple[Decision, str]]]
) -> ActionResult:
    try:
        decision, result = await decide()
    except Exception:
        log.exception("guardrail %s failed; blocking", rail)
        decision, result = Decision(rail, stage, Action.BLOCK, f"{rail}.error"), text
    collected = collector.get()
    if collected is not None:
        collected.append((decision, result))
    return {"action": decision.action.value, "text": result}
