"""Stopping the demo's children (`trimtab.app.demo.processes`): past the grace period the whole tree dies,
descendants in sessions of their own included, as torchrun starts its ranks."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from trimtab.app.demo.processes import DemoProcess

# A rank that will not stop: SIGTERM ignored, in a session of its own (torchrun's start_new_session).
RANK = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
# A launcher that ignores SIGTERM too and reports its rank's pid.
LAUNCHER = f"""
import signal, subprocess, sys, time
from pathlib import Path
signal.signal(signal.SIGTERM, signal.SIG_IGN)
rank = subprocess.Popen([sys.executable, "-c", {RANK!r}], start_new_session=True)
Path(sys.argv[1]).write_text(str(rank.pid))
time.sleep(600)
"""


def test_a_launcher_that_outlives_its_grace_period_is_killed_with_its_ranks(tmp_path: Path) -> None:
    report = tmp_path / "rank_pid"
    launcher = DemoProcess(
        "learner", [sys.executable, "-c", LAUNCHER, str(report)], tmp_path / "learner.log", dict(os.environ),
        stop_through_children=True,
    )  # fmt: skip
    launcher.start()
    deadline = time.monotonic() + 60
    while not report.is_file() or not report.read_text():
        assert time.monotonic() < deadline, (tmp_path / "learner.log").read_text()
        launcher.check()
        time.sleep(0.05)
    rank = psutil.Process(int(report.read_text()))
    assert rank.pid != launcher.pid and os.getsid(rank.pid) != os.getsid(launcher.pid or 0)

    launcher.terminate()  # to the rank, which ignores it
    assert launcher.wait(timeout_s=1.0) == -9  # SIGKILL once the grace period is over
    rank.wait(timeout=10)  # gone too (psutil raises TimeoutExpired if it still runs)
    assert not rank.is_running()
