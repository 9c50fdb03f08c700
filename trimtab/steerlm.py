"""The one SteerLM attribute format, shared by serving (attribute targets) and the learner (SteerLM SFT).

Attributes travel as a system message placed before the conversation:

    {"role": "system", "content": "attributes: helpfulness=4 correctness=4 verbosity=1"}

Names in the fixed order below, only those given, each an integer 0-4, as in NeMo-Aligner's SteerLM
(which renders `helpfulness:4,correctness:4,...`; ours uses words the default tokenizer splits well).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity", "toxicity")
MIN_SCORE, MAX_SCORE = 0, 4


def attribute_message(targets: Mapping[str, int]) -> dict[str, str]:
    """The system message that asks for `targets`; ValueError names an unknown attribute or bad score."""
    for name, score in targets.items():
        if name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}; known: {', '.join(ATTRIBUTES)}")
        if not MIN_SCORE <= score <= MAX_SCORE:
            raise ValueError(f"{name} must be between {MIN_SCORE} and {MAX_SCORE}, got {score}")
    pairs = " ".join(f"{name}={targets[name]}" for name in ATTRIBUTES if name in targets)
    return {"role": "system", "content": f"attributes: {pairs}"}


def with_attributes(messages: Sequence[dict[str, str]], targets: Mapping[str, int]) -> list[dict[str, str]]:
    """The conversation conditioned on `targets` (unchanged when there are none)."""
    return [attribute_message(targets), *messages] if targets else list(messages)
