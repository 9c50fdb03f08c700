"""The prompts RL samples answers to: JSONL of {"prompt": P}, P a string or chat messages (the shape of a
suite's held-out file), and each step's draw from them."""

from __future__ import annotations

import random
from pathlib import Path

from trimtab.jsonl import Messages, RecordError, check_fields, prompt_field, read_objects


def load_prompts(path: Path) -> list[Messages]:
    """Every prompt of `path`, or RecordError naming file:line and the field."""
    prompts: list[Messages] = []
    for where, data in read_objects(path):
        check_fields(data, {"prompt"}, where, "a prompts file")
        prompts.append(prompt_field(data, where))
    if not prompts:
        raise RecordError(f"{path}: no prompts (the file is empty)")
    return prompts


def draw(prompts: list[Messages], n: int, *, seed: int, step: int) -> list[Messages]:
    """Step `step`'s `n` prompts: a fresh shuffle per pass over the file, a function of (seed, step) alone,
    so a resumed run draws what the uninterrupted one would have."""
    first = (step - 1) * n
    drawn = []
    for position in range(first, first + n):
        epoch, index = divmod(position, len(prompts))
        order = list(range(len(prompts)))
        random.Random(f"{seed}:{epoch}").shuffle(order)
        drawn.append(prompts[order[index]])
    return drawn
