"""A warning that repeats with every failing call, said at most once per interval: the log shows that a
dependency is failing and for how long, without one line per request."""

from __future__ import annotations

import logging
import time


class ThrottledWarning:
    """`warning` logs the first time, then at most once every `every_s` seconds; the lines it held back
    are counted in the next one it lets through."""

    def __init__(self, logger: logging.Logger, every_s: float) -> None:
        self._logger = logger
        self._every_s = every_s
        self._last: float | None = None
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self._every_s:
            self._held += 1
            return
        if self._held:
            message += f" ({self._held} more like it since the last)"
        self._last, self._held = now, 0
        self._logger.warning(message, *args)
