"""The chaos tests' memory measure: a process tree's floor sees a leak and not a trainer's step peaks."""

from __future__ import annotations

import pytest

from tests.chaos.support import floor, slope


def test_a_trees_floor_is_the_sum_of_each_members_lowest_sample_in_each_minute() -> None:
    rank = [(0.0, 850.0), (0.2, 875.0), (0.5, 850.0), (1.0, 851.0), (1.3, 870.0), (1.6, 851.0)]
    launcher = [(0.0, 200.0), (0.2, 200.0), (0.5, 201.0), (1.0, 200.0), (1.3, 200.0), (1.6, 199.0)]
    assert floor({"rank": rank, "launcher": launcher}) == [(0.5, 1050.0), (1.5, 1050.0)]


def test_peaks_that_fall_back_leave_the_floor_flat_where_a_leak_raises_it() -> None:
    minutes = [i / 6 for i in range(54)]  # nine minutes of samples every 10 s
    # A step's activations caught in two samples of three, in the window's second half only.
    peaks = [(t, 850.0 + (25.0 if i % 3 and t > 4.5 else 0.0)) for i, t in enumerate(minutes)]
    assert slope(peaks) > 2.0  # the samples' own slope: peaks late in the window look like growth
    assert slope(floor({"rank": peaks})) == pytest.approx(0.0)
    leak = [(t, 850.0 + 3.0 * t) for t in minutes]
    assert slope(floor({"rank": leak})) == pytest.approx(3.0, abs=0.2)
