"""A long-lived helper process of rank 0 that answers commands over a local socket: the rollout engine
(`learner.rollout`) and the gates' evaluator (`learner.online.gate_worker`) both hold a vLLM engine
for a whole run this way, instead of starting one per use (a vLLM start is 15-40 s on a 2-core CPU).

It runs apart from torchrun's process group, as `learner.generation` explains, in its own session (a
Ctrl-C meant for the trainer does not kill it mid-command), and its whole process group is killed on
exit, with whatever vLLM started in it. Both workers step their engine in their own process
(`trimtab.engine.offline_llm`'s `in_process`): a separate engine-core process would import vLLM a second
time, 7-16 s of each start on our CPUs.

    with WorkerProcess.started("learner.rollout.worker", setup, name="the rollout engine", log=log) as worker:
        worker.call("generate", payload)

The child runs `python -m module SOCKET SETUP.json`: its set-up (any JSON: what it loads) comes in a file
only this user can read, not on the command line, where every user's `ps` would show it (a config may
hold keys). `started` returns at once; the first call waits for the child to listen, so a slow start
(vLLM's) overlaps whatever the caller does meanwhile. The child's side: `setup(argv)` and
`listen(socket, handlers)`, the socket's key in $TRIMTAB_WORKER_KEY.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from learner.generation import TORCHRUN_VARIABLES, Interrupted
from trimtab.errors import TrimtabError

KEY_VARIABLE = "TRIMTAB_WORKER_KEY"
START_TIMEOUT_S = 600.0  # vLLM's start on a 2-core machine: 15-40 s; a real model's weights load on top
POLL_S = 0.2  # how often a waiting call checks whether it should stop


class WorkerError(TrimtabError):
    """The worker failed: it did not start, died, or a command failed (the message says which)."""


@dataclass
class WorkerProcess:
    name: str  # for messages: "the rollout engine"
    process: subprocess.Popen[bytes]
    socket: str
    key: bytes
    log: Path
    connection: Connection | None = None  # made by the first call

    @classmethod
    @contextlib.contextmanager
    def started(cls, module: str, setup: Any, *, name: str, log: Path) -> Iterator[WorkerProcess]:
        """`python -m module SOCKET SETUP.json`, started; stopped (its whole process group) on exit."""
        key = secrets.token_bytes(16)
        with tempfile.TemporaryDirectory(prefix="trimtab-worker-") as scratch:  # mode 0700
            socket, setup_file = str(Path(scratch) / "worker.sock"), Path(scratch) / "setup.json"
            setup_file.write_text(json.dumps(setup))
            environment = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
            environment[KEY_VARIABLE] = key.hex()
            log.parent.mkdir(parents=True, exist_ok=True)
            with log.open("w") as out:
                process = subprocess.Popen(
                    [sys.executable, "-m", module, socket, str(setup_file)],
                    env=environment,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            worker = cls(name, process, socket, key, log)
            try:
                yield worker
                if worker.connection is not None:
                    with contextlib.suppress(WorkerError):
                        worker.call("stop", None)
            finally:
                if worker.connection is not None:
                    worker.connection.close()
                worker._kill()
                process.wait()

    def call(self, command: str, payload: Any, should_stop: Callable[[], bool] = lambda: False) -> Any:
        """The worker's answer to `command`; WorkerError if it failed or died. `should_stop` is polled while
        waiting (for the start too): a stop kills the worker, which may be mid-command, and raises
        Interrupted."""
        connection = self.connection or self._connect(should_stop)
        try:
            connection.send((command, payload))
            while not connection.poll(POLL_S):
                if should_stop():
                    self._kill()
                    raise Interrupted(f"{self.name} stopped: a stop was requested")
            status, result = connection.recv()
        except (EOFError, OSError) as exc:
            raise WorkerError(f"{self.name} died ({exc!r}); its log {self.log}:\n{tail(self.log)}") from exc
        if status == "error":
            raise WorkerError(f"{self.name}'s {command} failed:\n{result}")
        return result

    def _connect(self, should_stop: Callable[[], bool]) -> Connection:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise WorkerError(f"{self.name} exited {self.process.returncode} while starting:\n{tail(self.log)}")
            if should_stop():
                self._kill()
                raise Interrupted(f"{self.name} stopped while starting: a stop was requested")
            if os.path.exists(self.socket):
                try:
                    self.connection = Client(self.socket, family="AF_UNIX", authkey=self.key)
                    return self.connection
                except (ConnectionRefusedError, FileNotFoundError):
                    pass  # bound but not yet listening: try again
                except (AuthenticationError, EOFError, OSError) as exc:
                    raise WorkerError(
                        f"{self.name}'s socket refused the handshake ({exc!r}):\n{tail(self.log)}"
                    ) from exc
            time.sleep(POLL_S)
        raise WorkerError(f"{self.name} did not start within {START_TIMEOUT_S:.0f} s:\n{tail(self.log)}")

    def _kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)  # and whatever vLLM started in its group


def setup(argv: Sequence[str]) -> tuple[str, Any]:
    """The worker's side: its socket path and its set-up, from `python -m module SOCKET SETUP.json`."""
    socket, setup_file = argv[1:3]
    return socket, json.loads(Path(setup_file).read_text())


def listen(socket: str, handlers: Mapping[str, Callable[[Any], Any]]) -> None:
    """The worker's side: answer one connection's commands until "stop". A failing command answers
    ("error", traceback) and the worker stays up."""
    key = bytes.fromhex(os.environ[KEY_VARIABLE])
    with Listener(socket, family="AF_UNIX", authkey=key) as listener, listener.accept() as connection:
        while True:
            command, payload = connection.recv()
            if command == "stop":
                connection.send(("ok", None))
                return
            try:
                connection.send(("ok", handlers[command](payload)))
            except Exception:  # reported to the caller, which raises it
                connection.send(("error", traceback.format_exc()))


def tail(log: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text().splitlines()[-lines:])
    return "(no log)"
