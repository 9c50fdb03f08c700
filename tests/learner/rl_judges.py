"""Scorer entry points for the RL tests' bad-reward cases."""

from __future__ import annotations

from trimtab.jsonl import Messages


def raises(prompt: Messages, response: str) -> float:
    raise RuntimeError("rubric service unreachable")


def not_a_number(prompt: Messages, response: str) -> float:
    return float("nan")


SEEN: list[str] = []  # what `remembering` was asked to score, in this process


def remembering(prompt: Messages, response: str) -> float:
    """-words / 10, noting the prompt's last turn: tests see what RL sampled answers to."""
    SEEN.append(prompt[-1]["content"])
    return -len(response.split()) / 10
