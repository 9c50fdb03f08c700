"""A background service process that outlives the command that started it, tracked by a pid file."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServiceProcess:
    """Pid file, log file and liveness of one local service under the run directory."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def start(self, argv: list[str], endpoint: str) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            # A new session: the service must survive the CLI exiting and the terminal's Ctrl-C.
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "argv": argv, "endpoint": endpoint}))
        return proc.pid

    def record(self) -> dict[str, object] | None:
        """What `start` recorded, if the process it started is still alive; clears a stale pid file."""
        try:
            record = json.loads(self.pid_file.read_text())
        except (OSError, ValueError):
            return None
        if _alive(int(record["pid"]), str(record["argv"][0])):
            return dict(record)
        self.pid_file.unlink(missing_ok=True)
        return None

    def exited(self) -> bool:
        return self.record() is None

    def stop(self, timeout_s: float) -> bool:
        """SIGTERM, then SIGKILL after timeout_s. False if there was nothing of ours to stop."""
        record = self.record()
        if record is None:
            return False
        pid = int(str(record["pid"]))
        _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _alive(pid, None):
            time.sleep(0.05)
        if _alive(pid, None):
            _signal(pid, signal.SIGKILL)
        _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _reap(pid: int) -> None:
    """Collect the exit status if the service is our own child (tests start and stop in one process)."""
    with contextlib.suppress(ChildProcessError):  # started by an earlier `trimtab up`: init reaps it
        os.waitpid(pid, os.WNOHANG)


def _alive(pid: int, executable: str | None) -> bool:
    """True if pid runs (and, if given, runs `executable`: pids are reused after a reboot)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # A zombie has exited; only its parent has not reaped it yet.
            if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                return False
        # /proc/PID/exe, not cmdline: redis-server rewrites its cmdline into a process title.
        return executable is None or os.path.realpath(f"/proc/{pid}/exe") == os.path.realpath(executable)
    except (OSError, IndexError):
        return False
