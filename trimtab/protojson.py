"""Proto messages from HTTP bodies in protobuf's JSON mapping, with one wording for what is wrong."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def parse_body(raw: bytes, message: M) -> M:
    """`message` filled from a JSON body; ValueError saying what is wrong (the body, not a field, is named
    by the caller)."""
    try:
        data: Any = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise ValueError("not valid JSON") from None
    name = message.DESCRIPTOR.name
    if not isinstance(data, dict):
        raise ValueError(f"must be a JSON object (a {name}), got {type(data).__name__}")
    try:
        return json_format.ParseDict(data, message)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise ValueError(f"not a {name} in proto3 JSON: {exc}") from None


def body_of(message: Message) -> dict[str, Any]:
    """A message as an HTTP body: proto field names, every field present (defaults included)."""
    return json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
