"""A deadline on the graceful stop: a replica told to stop (or whose engine died) ends in bounded time.

Each step of the stop has its own bound (the drain's grace, the flushes' timeouts), but a step that
never returns (a library's close waiting on a thread, a socket, a child process) would leave a replica
that answers nothing and never exits, so its supervisor never restarts it. `StopDeadline` watches from
a thread of its own, which runs even while the event loop or the main thread is blocked, and from the
start of the stop to the end of the process (the interpreter's exit joins threads and runs atexit
hooks, which can hang too). When the deadline passes, or a second SIGTERM/SIGINT asks, it logs the step
the stop is stuck in, writes every thread's stack to stderr (what the next person needs to fix it),
kills the process's children (vLLM's engine core, the rails' encoder) and exits 1.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import os
import sys
import threading
import time

import psutil

log = logging.getLogger(__name__)
EXIT_CODE = 1  # the stop did not finish: a supervisor should see a failure, not a clean exit


class StopDeadline:
    """`start()` when the stop begins; `step(name)` as each step begins; `expire()` to end it now;
    `slowest()` says where the time went."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._steps: list[tuple[str, float]] = []  # (name, when it began)
        self._expired = threading.Event()
        self._started = 0.0
        self._thread = threading.Thread(target=self._watch, name="stop-deadline", daemon=True)

    def start(self) -> None:
        self._started = time.monotonic()
        self._thread.start()

    def step(self, name: str) -> None:
        self._steps.append((name, time.monotonic()))
        log.debug("stopping: %s", name)

    def slowest(self, count: int = 3) -> str:
        """The total so far and the `count` longest steps, as "7.1s (shutting the engine down 5.0s, ...)"."""
        now = time.monotonic()
        ends = [began for _, began in self._steps[1:]] + [now]
        took = sorted(((end - began, name) for (name, began), end in zip(self._steps, ends, strict=True)), reverse=True)
        longest = ", ".join(f"{name} {seconds:.1f}s" for seconds, name in took[:count])
        return f"{now - self._started:.1f}s ({longest})"

    def expire(self) -> None:
        """Give up on the graceful stop now (a second SIGTERM or SIGINT)."""
        self._expired.set()

    def _watch(self) -> None:
        asked = self._expired.wait(self.seconds)
        elapsed = time.monotonic() - self._started
        why = f"a second signal came {elapsed:.1f}s into the stop" if asked else f"the stop ran past {self.seconds:g}s"
        log.error(
            "%s, stuck at: %s; every thread's stack follows; killing the child processes and exiting %d",
            why,
            self._steps[-1][0] if self._steps else "starting",
            EXIT_CODE,
        )
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        _kill_children()
        os._exit(EXIT_CODE)


def _kill_children() -> None:
    """SIGKILL, not SIGTERM and a wait: the stop is given up, and while this thread waited the main thread
    could go on stopping and exit 0."""
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
