"""Identifiers are unique and sort by creation time."""

from __future__ import annotations

import os
import time

import pytest

from trimtab.ids import id_time_ms, minted_at_ms, new_id


def test_ids_are_unique_and_fixed_length() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert {len(i) for i in ids} == {26}


def test_an_id_is_its_128_bits_in_crockford_base32_most_significant_digit_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    millis, random = 1_732_922_825_876, bytes(range(0xF6, 0x100))  # 10 bytes: every bit pattern differs
    monkeypatch.setattr(time, "time_ns", lambda: millis * 1_000_000 + 999_999)
    monkeypatch.setattr(os, "urandom", lambda n: random[:n])
    value = millis << 80 | int.from_bytes(random)
    digits = "".join("0123456789ABCDEFGHJKMNPQRSTVWXYZ"[(value >> 5 * i) & 31] for i in reversed(range(26)))
    assert new_id("resp_") == "resp_" + digits and id_time_ms(digits) == millis


def test_ids_sort_by_creation_time_and_carry_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id("resp_")
    time.sleep(0.002)
    second = new_id("resp_")
    after = time.time_ns() // 1_000_000
    assert first < second and first.startswith("resp_")
    assert before <= id_time_ms(first) <= id_time_ms(second) <= after


def test_minted_at_reads_the_time_of_ids_new_id_made_and_refuses_anything_else() -> None:
    before = time.time_ns() // 1_000_000
    made = new_id("resp_")
    assert before <= (minted_at_ms(made, "resp_") or 0) <= time.time_ns() // 1_000_000
    assert minted_at_ms(made, "resp_") == id_time_ms(made)
    assert minted_at_ms(new_id()) is not None
    # 2**48 - 1 ms, the last time a ULID can carry, and 0: both ends of the first character's range.
    assert minted_at_ms("7ZZZZZZZZZ" + "0" * 16) == 2**48 - 1
    assert minted_at_ms("0" * 26) == 0


ULID = "01JDX3ZQ4M8N5K2P7R9T6V3W0Y"  # well formed: minted_at_ms("resp_" + ULID, "resp_") is its time


@pytest.mark.parametrize(
    "identifier",
    [
        "req_" + ULID,  # another prefix
        ULID,  # no prefix
        "resp_" + ULID.lower(),  # never what new_id writes (and Redis keys are exact)
        "resp_" + ULID[:-1],  # 25 characters
        "resp_" + ULID + "Z",  # 27
        "resp_" + ULID[:-1] + "I",  # I, L, O and U are not Crockford digits
        "resp_" + ULID[:-1] + "U",
        "resp_8" + ULID[1:],  # over 128 bits
        "resp_" + ULID + "\n",
        "resp_gone",
        "",
    ],
)
def test_minted_at_is_none_for_what_new_id_cannot_have_made(identifier: str) -> None:
    assert minted_at_ms("resp_" + ULID, "resp_") == 1_732_922_825_876
    assert minted_at_ms(identifier, "resp_") is None
