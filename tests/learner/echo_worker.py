"""A worker for tests/learner/test_worker_process.py: `learner.worker_process`'s child side with commands
that answer, fail, take their time or kill the process, and its set-up echoed back."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from learner.worker_process import listen, setup


def _fail(payload: Any) -> None:
    raise ValueError(f"asked to fail: {payload}")


def main() -> None:
    socket, settings = setup(sys.argv)
    listen(
        socket,
        {
            "setup": lambda _: {"settings": settings, "argv": sys.argv, "pid": os.getpid()},
            "echo": lambda payload: payload,
            "fail": _fail,
            "sleep": time.sleep,
            "die": lambda _: os._exit(3),
        },
    )


if __name__ == "__main__":
    main()
