"""Scorer entry points for the RL tests' bad-reward cases."""

from __future__ import annotations

from trimtab.jsonl import Messages


def raises(prompt: Messages, response: str) -> float:
    raise RuntimeError("rubric service unreachable")


def not_a_number(prompt: Messages, response: str) -> float:
    return float("nan")
