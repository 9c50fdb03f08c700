"""Small text-scanning primitives shared by the answer checks and the gold judge."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Spans that are data, not words: checked on their own and removed before counting numbers or
# looking words up in the lexicon.
CODE_RE = re.compile(r"\b[A-Za-z]+-\d{4}\b")
EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE_RE = re.compile(r"\b\d{3}-\d{3}-\d{4}\b")
CARD_RE = re.compile(r"\b\d{4}(?: \d{4}){3}\b")
NUMBER_RE = re.compile(r"\d+")
WORD_RE = re.compile(r"[A-Za-z]+")
_DATA_SPANS = (EMAIL_RE, CODE_RE, PHONE_RE, CARD_RE)


def marker_pattern(markers: Iterable[str], ignore_case: bool = True) -> re.Pattern[str]:
    """A regex that finds any of the markers as whole words or phrases."""
    alternatives = "|".join(sorted((re.escape(m) for m in markers), key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE if ignore_case else 0)


def strip_data_spans(text: str) -> str:
    """The text with codes, emails, phone and card numbers replaced by spaces."""
    for pattern in _DATA_SPANS:
        text = pattern.sub(" ", text)
    return text


def words(text: str) -> list[str]:
    """The alphabetic words of a text, lower-cased, data spans excluded."""
    return [w.lower() for w in WORD_RE.findall(strip_data_spans(text))]


def flexible_digits(value: str) -> re.Pattern[str]:
    """Matches a number's digits with or without the separators it was typed with."""
    digits = [d for d in value if d.isdigit()]
    return re.compile(r"(?<!\d)" + r"[\s-]?".join(digits) + r"(?!\d)")
