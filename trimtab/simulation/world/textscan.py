"""Small text-scanning primitives shared by the answer checks and the gold judge."""

from __future__ import annotations

import re

# The world's checks match markers and numbers as the rails do.
from trimtab.textmatch import flexible_digits as flexible_digits
from trimtab.textmatch import marker_pattern as marker_pattern

# Spans that are data, not words: checked on their own and removed before counting numbers or
# looking words up in the lexicon.
CODE_RE = re.compile(r"\b[A-Za-z]+-\d{4}\b")
EMAIL_RE = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b")
PHONE_RE = re.compile(r"\b\d{3}-\d{3}-\d{4}\b")
CARD_RE = re.compile(r"\b\d{4}(?: \d{4}){3}\b")
NUMBER_RE = re.compile(r"\d+")
WORD_RE = re.compile(r"[A-Za-z]+")
_DATA_SPANS = (EMAIL_RE, CODE_RE, PHONE_RE, CARD_RE)


def strip_data_spans(text: str) -> str:
    """The text with codes, emails, phone and card numbers replaced by spaces."""
    for pattern in _DATA_SPANS:
        text = pattern.sub(" ", text)
    return text


def words(text: str) -> list[str]:
    """The alphabetic words of a text, lower-cased, data spans excluded."""
    return [w.lower() for w in WORD_RE.findall(strip_data_spans(text))]
