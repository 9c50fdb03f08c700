"""Training data from JSONL files in the seed formats, validated line by line, then tokenised.

    SFT          {"prompt": P, "response": "..."}
    DPO / IPO    {"prompt": P, "chosen": "...", "rejected": "..."}
    KTO          {"prompt": P, "completion": "...", "label": true | false}

P is a string (one user turn) or a chat message list [{"role": ..., "content": ...}, ...]. A bad line
is a `DataError` naming file:line and the field, never a skipped example: silently training on less
data than the user gave is worse than stopping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from learner.batching import Messages, TokenizedExample, tokenize_chat
from trimtab.errors import TrimtabError

# The response fields each algorithm's records carry besides "prompt".
RESPONSE_FIELDS: dict[str, tuple[str, ...]] = {
    "sft": ("response",),
    "dpo": ("chosen", "rejected"),
    "ipo": ("chosen", "rejected"),
    "kto": ("completion",),
}


class DataError(TrimtabError):
    """A training file cannot be used; the message says file:line, the field and what is wrong."""


@dataclass(frozen=True)
class Record:
    """One validated line: the prompt as chat messages, its responses in RESPONSE_FIELDS order, and
    for KTO whether the completion is desirable."""

    prompt: Messages
    responses: tuple[str, ...]
    desirable: bool = True
    where: str = ""  # "file:line", for errors found after parsing (e.g. too long once tokenised)


@dataclass(frozen=True)
class TrainExample:
    """The token sequences one example trains on, in a fixed order per algorithm:
    SFT (response,); DPO/IPO (chosen, rejected); KTO (completion, mismatched completion for the KL term)."""

    sequences: tuple[TokenizedExample, ...]
    desirable: bool = True

    def __len__(self) -> int:
        return max(len(sequence) for sequence in self.sequences)


def load_records(path: Path, algorithm: str) -> list[Record]:
    """Every line of `path` as a Record for `algorithm`, or DataError at the first bad one."""
    if algorithm not in RESPONSE_FIELDS:
        raise DataError(f"no data format for algorithm {algorithm!r}; known: {', '.join(RESPONSE_FIELDS)}")
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    records = [_parse_line(text, f"{path}:{n}", algorithm) for n, text in enumerate(lines, 1) if text.strip()]
    if not records:
        raise DataError(f"{path}: no examples (the file is empty)")
    return records


def _parse_line(text: str, where: str, algorithm: str) -> Record:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(data).__name__}")
    fields = RESPONSE_FIELDS[algorithm]
    expected = {"prompt", *fields, *(("label",) if algorithm == "kto" else ())}
    unknown = sorted(set(data) - expected)
    if unknown:
        raise DataError(f"{where}: field {unknown[0]!r}: unknown for {algorithm} (expected {sorted(expected)})")
    prompt = _prompt(data, where)
    responses = tuple(_text(data, name, where) for name in fields)
    desirable = _label(data, where) if algorithm == "kto" else True
    return Record(prompt, responses, desirable, where)


def _prompt(data: dict[str, Any], where: str) -> Messages:
    value = data.get("prompt")
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: field 'prompt': must be a non-empty string or a non-empty list of messages")
    for i, message in enumerate(value):
        ok = isinstance(message, dict) and set(message) == {"role", "content"}
        if not ok or not all(isinstance(message[key], str) for key in ("role", "content")):
            raise DataError(f"{where}: field 'prompt[{i}]': must be {{'role': str, 'content': str}}")
    return [dict(message) for message in value]


def _text(data: dict[str, Any], name: str, where: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        got = "missing" if name not in data else f"got {type(value).__name__} {value!r}"[:80]
        raise DataError(f"{where}: field {name!r}: must be a non-empty string ({got})")
    return value


def _label(data: dict[str, Any], where: str) -> bool:
    value = data.get("label")
    if not isinstance(value, bool):
        got = "missing" if "label" not in data else f"got {value!r}"
        raise DataError(f"{where}: field 'label': must be true (desirable) or false (undesirable) ({got})")
    return value


def tokenize_records(
    records: Sequence[Record], tokenizer: PreTrainedTokenizerBase, algorithm: str, max_length: int
) -> list[TrainExample]:
    """TrainExamples with prompt tokens masked (batching.tokenize_chat), or DataError for a too-long one.

    KTO's KL term needs a completion that does not belong to the prompt: example i takes record
    (i + 1) mod N's completion, fixed here once (TRL pairs within each batch instead) so that its
    reference log-prob can be computed once, before training, like every other reference log-prob.
    """
    examples = []
    for i, record in enumerate(records):
        sequences = [tokenize_chat(tokenizer, record.prompt, response) for response in record.responses]
        if algorithm == "kto":
            mismatched = records[(i + 1) % len(records)].responses[0]
            sequences.append(tokenize_chat(tokenizer, record.prompt, mismatched))
        example = TrainExample(tuple(sequences), record.desirable)
        if len(example) > max_length:
            raise DataError(f"{record.where}: {len(example)} tokens, over learner.train.max_length = {max_length}")
        examples.append(example)
    return examples
