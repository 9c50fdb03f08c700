"""JSONL files in the seed's shapes, read line by line: every bad line is a `RecordError` naming
`file:line` and the field, never a skipped line (silently using less data than the user gave is worse
than stopping).

A prompt is a string (one user turn) or a chat message list [{"role": ..., "content": ...}, ...]; both
become `Messages`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trimtab.errors import TrimtabError

Messages = Sequence[dict[str, str]]


class RecordError(TrimtabError):
    """A JSONL file cannot be used; the message names file:line and the field."""


def read_objects(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(`file:line`, object) for every non-blank line of `path`."""
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise RecordError(f"{path}: cannot read: {exc.strerror}") from exc
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise RecordError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(data, dict):
            raise RecordError(f"{where}: expected a JSON object, got {type(data).__name__}")
        yield where, data


def check_fields(data: dict[str, Any], expected: set[str], where: str, what: str) -> None:
    """Refuse a field `what` does not know (a typo must not silently drop a label)."""
    unknown = sorted(set(data) - expected)
    if unknown:
        raise RecordError(f"{where}: field {unknown[0]!r}: unknown for {what} (expected {sorted(expected)})")


def prompt_field(data: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The line's "prompt" as chat messages."""
    value = data.get("prompt")
    if isinstance(value, str) and value.strip():
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise RecordError(f"{where}: field 'prompt': must be a non-empty string or a non-empty list of messages")
    for i, message in enumerate(value):
        ok = isinstance(message, dict) and set(message) == {"role", "content"}
        if not ok or not all(isinstance(message[key], str) for key in ("role", "content")):
            raise RecordError(f"{where}: field 'prompt[{i}]': must be {{'role': str, 'content': str}}")
    return [dict(message) for message in value]


def text_field(data: dict[str, Any], name: str, where: str) -> str:
    """The line's non-empty string field `name`."""
    value = data.get(name)
    if not isinstance(value, str) or not value:
        got = "missing" if name not in data else f"got {type(value).__name__} {value!r}"[:80]
        raise RecordError(f"{where}: field {name!r}: must be a non-empty string ({got})")
    return value


def last_user_turn(messages: Messages) -> str:
    """The text a one-turn check reads: the conversation's last user message (else its last message)."""
    users = [message["content"] for message in messages if message.get("role") == "user"]
    return users[-1] if users else messages[-1]["content"]
