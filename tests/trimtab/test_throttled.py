"""A repeating warning is said once per interval, with the count of those held back."""

from __future__ import annotations

import logging

import pytest

from trimtab import throttled
from trimtab.throttled import ThrottledWarning


def test_the_first_warning_is_said_then_one_per_interval_counting_the_rest(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [100.0]
    monkeypatch.setattr(throttled.time, "monotonic", lambda: now[0])
    warnings = ThrottledWarning(logging.getLogger("test.throttled"), every_s=10.0)
    with caplog.at_level(logging.WARNING, logger="test.throttled"):
        for second in (0, 1, 2, 9.9, 10, 11, 25):
            now[0] = 100.0 + second
            warnings.warning("down: %s", second)
    assert [r.getMessage() for r in caplog.records] == [
        "down: 0",
        "down: 10 (3 more like it since the last)",
        "down: 25 (1 more like it since the last)",
    ]
