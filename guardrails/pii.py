"""Personal data and credentials in text: e-mail addresses, phone numbers, card numbers, API keys.

Pure regular expressions (no model), applied in a fixed order so that one span is one kind: keys
first (they may contain digit runs), then cards (a card's digit groups look like phone numbers), then
e-mails, then phones. Masking replaces each span with a placeholder that no pattern matches, so
masking twice changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

MASKS = {"api_key": "[API_KEY]", "card": "[CARD]", "email": "[EMAIL]", "phone": "[PHONE]"}
ORDER = ("api_key", "card", "email", "phone")

_PATTERNS: dict[str, re.Pattern[str]] = {
    "api_key": re.compile(
        r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}"  # OpenAI/Stripe style
        r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key id
        r"|\bgh[pousr]_[A-Za-z0-9]{30,}\b"  # GitHub tokens
        r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
        r"|\bAIza[0-9A-Za-z_-]{35}"  # Google API keys
        r"|(?i:\b(?:api[_-]?key|secret[_-]?key|access[_-]?token)\s*[:=]\s*)[A-Za-z0-9_\-./+]{16,}"
    ),
    # 13 to 19 digits, optionally in groups separated by single spaces or dashes.
    "card": re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"),
    "email": re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b"),
    # North-American style with optional country code: 555-123-4567, (555) 123 4567, +1 555.123.4567.
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)\s?|\d{3}[ .-]?)\d{3}[ .-]?\d{4}(?!\w)"),
}


@dataclass(frozen=True)
class PiiFinding:
    kinds: tuple[str, ...]  # in ORDER, each once
    masked: str


def find_pii(text: str, entities: Sequence[str], card_luhn: bool = False) -> PiiFinding:
    """Which kinds of PII the text holds, and the text with every span masked."""
    kinds = []
    for kind in ORDER:
        if kind not in entities:
            continue
        pattern = _PATTERNS[kind]
        spans = [m for m in pattern.finditer(text) if kind != "card" or not card_luhn or _luhn(m.group())]
        if not spans:
            continue
        kinds.append(kind)
        for match in reversed(spans):
            text = text[: match.start()] + MASKS[kind] + text[match.end() :]
    return PiiFinding(tuple(kinds), text)


def spans(text: str, entities: Sequence[str]) -> list[tuple[int, int]]:
    """(start, end) of every PII span, for a stream deciding where it may cut its text."""
    return [m.span() for kind in ORDER if kind in entities for m in _PATTERNS[kind].finditer(text)]


def _luhn(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()][::-1]
    total = sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits))
    return total % 10 == 0
