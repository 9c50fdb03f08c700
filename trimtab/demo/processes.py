"""The demo's child processes: `trimtab serve`, `trimtab feedback` and the online learner.

Each runs in its own session (the terminal's Ctrl-C reaches only the harness, which then stops them in
order), writes stdout and stderr to one log file, and is told to exit by the kernel if the harness
dies (PR_SET_PDEATHSIG). Stopping is SIGTERM, a grace period, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from trimtab.errors import TrimtabError

PR_SET_PDEATHSIG = 1


def learner_command() -> tuple[list[str], dict[str, str]]:
    """The online learner's command line and extra environment: the one place to change how it starts.

    Two torchrun ranks on this machine; one OpenMP thread each, so the two ranks (and vLLM beside them)
    do not oversubscribe the cores.
    """
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    argv += ["-m", "trimtab.cli", "learn", "--online"]
    return argv, {"OMP_NUM_THREADS": "1"}


def trimtab_command(*args: str) -> list[str]:
    """`trimtab ARGS...` with this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "trimtab.cli", *args]


class ProcessDied(TrimtabError):
    """A process of the demo exited while it should be running."""


@dataclass
class DemoProcess:
    """One child process of the demo and its log file."""

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str]
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=dict(self.env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def check(self) -> None:
        """ProcessDied (one line, naming the log) if the process has exited."""
        if self.process is not None and (code := self.process.poll()) is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise ProcessDied(f"{self.name} {how}: see {self.log}")

    def terminate(self) -> None:
        """Send SIGTERM (no wait) if it still runs."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int | None:
        """Its exit code, SIGKILLing it after `timeout_s`; None if it was never started."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def stop_all(processes: list[DemoProcess], timeout_s: float) -> dict[str, int | None]:
    """SIGTERM every process in the given order, then wait for each: name -> exit code."""
    for process in processes:
        process.terminate()
    return {process.name: process.wait(timeout_s) for process in processes}


def child_env(config_file: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment with the run's config file as the only trimtab config source."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    return env | {"TRIMTAB_CONFIG": str(config_file)} | dict(extra or {})


def _load_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Looked up here, not in the child: between fork and exec only the foreign call itself should run.
_PRCTL = _load_prctl()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the harness exits, however it exits (Linux only)."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGTERM))
