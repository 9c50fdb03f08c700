"""The demo's child processes: `trimtab serve`, `trimtab feedback` and the online learner.

Each runs in its own session (the terminal's Ctrl-C reaches only the harness, which then stops them in
order), writes stdout and stderr to one log file, and is told to exit by the kernel if the harness
dies (PR_SET_PDEATHSIG). Stopping is SIGTERM, a grace period, then SIGKILL of the whole process tree.

CPU time of a process tree, from outside it. While a child runs, `TreeCpu` sums over it and every live
descendant the CPU it used itself plus what its already-reaped children used (the kernel adds a child's
whole rusage, its own reaped descendants included, to its parent's when the parent waits for it): so a
gate process that has exited and been waited for still counts, through its parent. When the child
exits, the harness reaps it with wait4(2), whose rusage is the exact total of the tree (every process
in it that its parent waited for), so `DemoProcess` reaps with wait4 itself, never through Popen.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from trimtab.errors import TrimtabError

PR_SET_PDEATHSIG = 1


def learner_command() -> tuple[list[str], dict[str, str]]:
    """The online learner's command line and extra environment: the one place to change how it starts."""
    return torchrun_command("trimtab.app.cli", "learn", "--online")


def torchrun_command(module: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """`python -m module ARGS...` as the learner's ranks run: two torchrun ranks on this machine, one
    OpenMP thread each, so the two ranks (and vLLM beside them) do not oversubscribe the cores."""
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return [*argv, "-m", module, *args], {"OMP_NUM_THREADS": "1"}


def trimtab_command(*args: str) -> list[str]:
    """`trimtab ARGS...` with this interpreter (the venv's), whatever is on PATH."""
    return [sys.executable, "-m", "trimtab.app.cli", *args]


class ProcessDied(TrimtabError):
    """A process of the demo exited while it should be running."""


@dataclass
class DemoProcess:
    """One child process of the demo and its log file."""

    name: str
    argv: list[str]
    log: Path
    env: Mapping[str, str]
    # For a launcher (torchrun): stop it by signalling its children, the ranks. torchrun turns a SIGTERM
    # of its own into an exception and exit code 1 even when every rank then stops cleanly; ranks that
    # finish their round, checkpoint and exit 0 let it exit 0.
    stop_through_children: bool = False
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _cpu_s: float | None = field(default=None, init=False)

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
        if self.process is not None and (code := self._reap(block=False)) is not None:
            how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
            raise ProcessDied(f"{self.name} {how}: see {self.log}")

    def terminate(self) -> None:
        """Send SIGTERM (no wait) if it still runs (to its children, for a launcher that has some)."""
        if self.stop_through_children and self.process is not None:
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.process.pid).children()
                if children:
                    for child in children:
                        with contextlib.suppress(psutil.Error):
                            child.send_signal(signal.SIGTERM)
                    return
        self._signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int | None:
        """Its exit code, SIGKILLing it after `timeout_s`; None if it was never started."""
        if self.process is None:
            return None
        deadline = time.monotonic() + timeout_s
        while (code := self._reap(block=False)) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if code is None:
            self._kill_tree()
            code = self._reap(block=True)
        return code

    @property
    def cpu_s(self) -> float | None:
        """CPU seconds (user + system) of its whole process tree, once it has exited and been reaped."""
        return self._cpu_s

    def _kill_tree(self) -> None:
        """SIGKILL it and every descendant: a launcher's ranks run in sessions of their own (torchrun starts
        them with start_new_session) and would go on training beside the next learner if only it died."""
        assert self.process is not None
        descendants: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            descendants = psutil.Process(self.process.pid).children(recursive=True)
        self._signal(signal.SIGKILL)
        for descendant in descendants:
            with contextlib.suppress(psutil.Error):
                descendant.kill()

    def _signal(self, signum: signal.Signals) -> None:
        # os.kill, not Popen.send_signal: that polls, and a poll that reaps would lose the rusage.
        if self.process is not None and self._reap(block=False) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def _reap(self, block: bool) -> int | None:
        """The exit code once the process has exited (reaped here, with its tree's rusage), else None."""
        assert self.process is not None
        if self.process.returncode is not None:
            return self.process.returncode
        try:
            pid, status, usage = os.wait4(self.process.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: the exit code is lost with the rusage
            return self.process.poll()
        if pid == 0:
            return None
        self._cpu_s = usage.ru_utime + usage.ru_stime
        self.process.returncode = os.waitstatus_to_exitcode(status)  # Popen then never waits for it again
        return self.process.returncode


class TreeCpu:
    """CPU seconds used so far by a process and all its descendants (see the module docstring); never
    decreases, so a sample taken while a descendant has exited but is not yet reaped cannot dip."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu_s = 0.0

    def sample(self) -> float:
        try:
            root = psutil.Process(self.pid)
            tree = [root, *root.children(recursive=True)]
        except psutil.Error:  # the root has exited: its total comes from wait4
            return self.cpu_s
        used = 0.0
        for process in tree:
            with contextlib.suppress(psutil.Error):
                times = process.cpu_times()
                used += times.user + times.system + times.children_user + times.children_system
        self.cpu_s = max(self.cpu_s, used)
        return self.cpu_s


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
