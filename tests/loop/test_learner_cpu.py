"""The demo's CPU accounting of a child's whole process tree, a grandchild that exited included: while the
child runs (TreeCpu, through the child's reaped-children times) and once it is reaped (wait4)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from trimtab.app.demo.processes import DemoProcess, ProcessDied, TreeCpu

# The grandchild burns some CPU and reports how much; the child waits for it, says so, then idles.
GRANDCHILD = "import time; sum(i * i for i in range(2_000_000)); print(time.process_time())"
CHILD = f"""
import subprocess, sys, time
from pathlib import Path
out = subprocess.run([sys.executable, "-c", {GRANDCHILD!r}], capture_output=True, text=True, check=True).stdout
Path(sys.argv[1]).write_text(out)
time.sleep(60)
"""


def test_cpu_of_an_exited_grandchild_counts_while_running_and_after_the_reap(tmp_path: Path) -> None:
    report = tmp_path / "grandchild_cpu"
    child = DemoProcess("tree", [sys.executable, "-c", CHILD, str(report)], tmp_path / "tree.log", dict(os.environ))
    child.start()
    try:
        deadline = time.monotonic() + 60
        while not report.is_file() or not report.read_text():
            assert time.monotonic() < deadline, (tmp_path / "tree.log").read_text()
            child.check()
            time.sleep(0.05)
        grandchild_cpu = float(report.read_text())
        assert child.pid is not None
        assert TreeCpu(child.pid).sample() >= grandchild_cpu  # gone, but counted through its parent
    finally:
        child.terminate()
        code = child.wait(timeout_s=10)
    assert code == -15  # SIGTERM
    assert child.cpu_s is not None and child.cpu_s >= grandchild_cpu
    with pytest.raises(ProcessDied, match="killed by SIGTERM"):
        child.check()
