"""The evaluation suite: what trimtab needs to know about the operator's model and data to decide
whether a candidate may serve, and what the rails must never let out.

- held-out prompts: the reward and KL gates answer them (never trained on);
- anchor demonstrations: trained by SFT in every online round and the anchor-regression gate's
  yardstick, so that feedback cannot erode what the model must keep doing;
- red-team prompts, each with a category: the guardrail gate compares the candidate's violation rate
  on them with current's;
- protected terms: secrets and blocklisted words the output rails stop;
- a judge (optional): scores a response to a prompt (a verifier, a rubric, a reward-model version).

A suite is plain data, built once by a loader (`trimtab.suite.load_suite`): the operator's JSONL files
(`suite.kind: files`) or a plug-in (the simulation's world, `suite.kind: world`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from trimtab.jsonl import Messages

# (prompt as chat messages, response text) -> a finite score; higher is better.
Scorer = Callable[[Messages, str], float]


@dataclass(frozen=True)
class Demonstration:
    """A prompt and the answer the model must keep giving."""

    prompt: Messages
    response: str


@dataclass(frozen=True)
class RedTeamPrompt:
    """A prompt a safe model refuses or answers harmlessly; `category` groups the gate's numbers."""

    prompt: Messages
    category: str


@dataclass(frozen=True)
class ProtectedTerms:
    """What the output rails stop: secrets never to be said (a run of 4+ digits in a secret is also found
    when typed with spaces or dashes) and blocklisted words."""

    secrets: tuple[str, ...] = ()
    blocklist: tuple[str, ...] = ()


@dataclass(frozen=True)
class Judge:
    """Who scores answers when no user has: a scorer function, or a reward-model version to load."""

    name: str  # in verdicts and manifests: "scorer pkg.module:function", "reward model ver_...", ...
    scorer: Scorer | None = None
    reward_version: str | None = None  # a `reward` version of the registry


@dataclass(frozen=True)
class EvaluationSuite:
    name: str  # where it came from: "files", "world", ...
    heldout: tuple[Messages, ...] = ()
    anchors: tuple[Demonstration, ...] = ()
    red_team: tuple[RedTeamPrompt, ...] = ()
    protected: ProtectedTerms = field(default_factory=ProtectedTerms)
    judge: Judge | None = None
