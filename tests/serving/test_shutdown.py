"""The stop's deadline (no services needed; each case is a real process that stops, or hangs while
stopping): past the deadline, or on a second signal, the process names the step it is stuck in, writes
every thread's stack, kills its children and exits 1; a stop that finishes in time keeps its own exit
and says which steps took its time."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import psutil

from tests.conftest import REPO

PREAMBLE = """
import logging, subprocess, sys, threading
from serving.shutdown import StopDeadline
logging.basicConfig(level=logging.INFO)
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print(child.pid, flush=True)
"""
HANGS = "lock = threading.Lock(); lock.acquire(); lock.acquire()  # a step that never returns\n"


def stopping(script: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run PREAMBLE + script; its outcome and the pid of the child it started."""
    done = subprocess.run(
        [sys.executable, "-c", PREAMBLE + script], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    return done, int(done.stdout.split()[0])


def gone(pid: int) -> bool:
    """The process ended (within 10 s: a SIGKILL is delivered at once, the exit follows)."""
    for _ in range(100):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:  # ended, not yet reaped by init
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_stop_that_hangs_past_its_deadline_names_its_step_dumps_every_stack_and_exits_1() -> None:
    script = "deadline = StopDeadline(0.5)\ndeadline.start()\ndeadline.step('flushing the response log')\n" + HANGS
    done, child = stopping(script)
    hang_line = (PREAMBLE + script).count("\n")  # HANGS is the last line
    assert done.returncode == 1, done.stderr
    assert "the stop ran past 0.5s" in done.stderr
    assert "stuck at: flushing the response log" in done.stderr
    # faulthandler's dump: the hung main thread at the line it hangs on, and the watching thread
    assert "most recent call first" in done.stderr and f"line {hang_line} in <module>" in done.stderr
    assert "in _watch" in done.stderr
    assert gone(child)


def test_a_second_signal_ends_the_stop_at_once() -> None:
    done, child = stopping(
        "deadline = StopDeadline(600)\ndeadline.start()\ndeadline.step('shutting the engine down')\n"
        "deadline.expire()\n" + HANGS
    )
    assert done.returncode == 1, done.stderr
    assert "a second signal came" in done.stderr and "stuck at: shutting the engine down" in done.stderr
    assert gone(child)


def test_a_stop_that_finishes_in_time_keeps_its_own_exit_code_and_says_where_its_time_went() -> None:
    done, child = stopping(
        "import time\ndeadline = StopDeadline(600)\ndeadline.start()\ndeadline.step('flushing')\ntime.sleep(0.3)\n"
        "deadline.step('exiting')\nchild.kill(); child.wait()\nprint(deadline.slowest())\nsys.exit(0)\n"
    )
    assert done.returncode == 0, done.stderr
    assert "stuck at" not in done.stderr
    assert re.fullmatch(r"\d+\.\ds \(flushing 0\.[3-9]s, exiting \d+\.\ds\)", done.stdout.split("\n")[1])
    assert gone(child)
