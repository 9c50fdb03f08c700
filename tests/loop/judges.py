"""Scorer entry points the real-model tests configure as the suite's judge (`suite.judge`)."""

from __future__ import annotations

from trimtab.jsonl import Messages


def brevity(prompt: Messages, response: str) -> float:
    """Shorter answers score higher: a deterministic verifier-like judge, -words / 10."""
    return -len(response.split()) / 10
