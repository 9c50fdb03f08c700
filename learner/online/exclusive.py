"""One online learner per checkpoint directory.

Two learners on one checkpoint directory and consumer group would each resume from the same checkpoint
and each train the same feedback, publishing two interleaved lineages that serving swaps between. That
happens when a learner is restarted while its old ranks still run: torchrun starts every rank in a
session of its own, so a SIGKILL of the launcher (or of its process group) leaves them running (found
by the loop's chaos test, tests/chaos/test_loop_chaos.py). Rank 0 therefore holds an exclusive lock on
`<checkpoint_dir>/learner.lock` for the whole run; the kernel releases it however the process ends, so
a restart after a crash never waits. The file says who holds it, for the error a second learner gets.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from trimtab.errors import TrimtabError

LOCK_FILE = "learner.lock"


class LearnerRunning(TrimtabError):
    """Another learner holds the checkpoint directory."""


@contextmanager
def exclusive(checkpoint_dir: Path) -> Iterator[None]:
    """Hold `checkpoint_dir` for this process, or raise LearnerRunning naming the holder."""
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    path = checkpoint_dir / LOCK_FILE
    with path.open("a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise LearnerRunning(
                f"another online learner is running on {checkpoint_dir} ({holder}); two would each train the"
                " same feedback. Stop it (all its ranks) first."
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC")
        lock.flush()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
