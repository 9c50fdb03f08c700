"""Unique, time-sortable identifiers (ULIDs) for requests, responses, events and versions.

26 Crockford base32 characters: 48 bits of milliseconds since the epoch, then 80 random bits. Ids
sort by creation time as plain strings (to the millisecond; within one millisecond, by chance), so
Redis keys, Kafka keys and log lines order naturally, and they never collide in practice.
"""

from __future__ import annotations

import os
import re
import time

RESPONSE_ID_PREFIX = "resp_"  # InferenceService's response ids (Candidate.response_id): "resp_" + a ULID

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_RANDOM_BITS = 80
# Every pair of digits (10 bits) by value: an id is 13 lookups. A digit-by-digit loop took most of an
# id's cost, and RFC 4648's encoder (base64.b32encode) is Python code too, twice as slow as this.
_PAIRS = [first + second for first in _CROCKFORD for second in _CROCKFORD]
_PAIR_SHIFTS = tuple(range(120, -1, -10))  # 130 bits, the top two zero: a ULID's first digit is at most 7
# As new_id writes one: 128 bits in 26 characters, so the first is at most 7; upper case, no I, L, O, U.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def new_id(prefix: str = "") -> str:
    """A new ULID, optionally with a readable prefix such as 'resp_'."""
    value = (time.time_ns() // 1_000_000) << _RANDOM_BITS | int.from_bytes(os.urandom(_RANDOM_BITS // 8))
    return prefix + "".join([_PAIRS[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def id_time_ms(identifier: str) -> int:
    """Milliseconds since the epoch at which an id from new_id() was made (prefix ignored)."""
    value = 0
    for char in identifier[-26:-16]:
        value = value * 32 + _CROCKFORD.index(char)
    return value


def minted_at_ms(identifier: str, prefix: str = "") -> int | None:
    """When new_id(prefix) made `identifier`, in milliseconds since the epoch; None if it is not `prefix`
    followed by a ULID exactly as new_id writes one (so not an id it can have made)."""
    if not identifier.startswith(prefix) or not _ULID.fullmatch(identifier, len(prefix)):
        return None
    return id_time_ms(identifier)
