"""Identifiers are unique and sort by creation time."""

from __future__ import annotations

import time

from trimtab.ids import id_time_ms, new_id


def test_ids_are_unique_and_fixed_length() -> None:
    ids = [new_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert {len(i) for i in ids} == {26}


def test_ids_sort_by_creation_time_and_carry_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_id("resp_")
    time.sleep(0.002)
    second = new_id("resp_")
    after = time.time_ns() // 1_000_000
    assert first < second and first.startswith("resp_")
    assert before <= id_time_ms(first) <= id_time_ms(second) <= after
