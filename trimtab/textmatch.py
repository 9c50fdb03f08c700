"""Patterns that find words and numbers the way people type them, for the rails and the simulation."""

from __future__ import annotations

import re
from collections.abc import Iterable


def marker_pattern(markers: Iterable[str], ignore_case: bool = True) -> re.Pattern[str]:
    """A regex that finds any of the markers as whole words or phrases."""
    alternatives = "|".join(sorted((re.escape(m) for m in markers), key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE if ignore_case else 0)


def flexible_digits(value: str) -> re.Pattern[str]:
    """Matches a number's digits with or without the separators it was typed with."""
    digits = [d for d in value if d.isdigit()]
    return re.compile(r"(?<!\d)" + r"[\s-]?".join(digits) + r"(?!\d)")
