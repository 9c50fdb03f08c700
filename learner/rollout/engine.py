"""The trainer's handle on its rollout engine: a vLLM engine that lives as long as the training run, in a
child process of rank 0 (apart from torchrun's process group, as `learner.generation` explains), and is
refitted in place after each update (new full weights reloaded, or a new LoRA adapter), never restarted.

    with RolloutEngine.started(model_dir, engine_config, adapter=True, log=run_dir / "rollout.log") as engine:
        rollouts = engine.generate(conversations, Sampling(n=4, temperature=1.0, max_tokens=64, seed=step))
        seconds = engine.refit(exported_dir)   # the policy after this step's update
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from learner.distributed import DistContext
from learner.generation import TORCHRUN_VARIABLES
from learner.rollout.records import Rollout, Sampling
from learner.rollout.worker import KEY_VARIABLE
from trimtab.config import EngineConfig
from trimtab.errors import TrimtabError

START_TIMEOUT_S = 600.0  # vLLM's start on a 2-core machine: 15-40 s; a real model's weights load on top


class RolloutError(TrimtabError):
    """The rollout engine failed: it did not start, died, or a command failed (the message says which)."""


@dataclass
class RolloutEngine:
    connection: Connection
    process: subprocess.Popen[bytes]
    log: Path
    adapter: bool  # the policy is a LoRA adapter: refits load adapters, the base weights never change

    @classmethod
    @contextlib.contextmanager
    def started(cls, model_dir: Path, engine: EngineConfig, *, adapter: bool, log: Path) -> Iterator[RolloutEngine]:
        """Start the engine on `model_dir` (the policy's base); shut it down (its whole process group) on exit."""
        # Processed log-probs (after temperature) whatever serving uses: the PPO ratio's denominator.
        settings = engine.model_copy(update={"lora": adapter, "logprobs_mode": "processed_logprobs"})
        key = secrets.token_bytes(16)
        with tempfile.TemporaryDirectory(prefix="trimtab-rollout-") as scratch:
            socket = str(Path(scratch) / "engine.sock")
            environment = {name: value for name, value in os.environ.items() if name not in TORCHRUN_VARIABLES}
            environment[KEY_VARIABLE] = key.hex()
            command = [sys.executable, "-m", "learner.rollout.worker", socket, str(model_dir)]
            with log.open("w") as out:
                process = subprocess.Popen(
                    [*command, settings.model_dump_json()],
                    env=environment,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # a Ctrl-C meant for the trainer does not kill it mid-command
                )
            try:
                with _connect(socket, key, process, log) as connection:
                    handle = cls(connection, process, log, adapter)
                    yield handle
                    handle._call("stop", None)
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # vLLM's engine core is a grandchild
                process.wait()

    @classmethod
    @contextlib.contextmanager
    def on_main(
        cls, context: DistContext, model_dir: Path, engine: EngineConfig, *, adapter: bool, log: Path
    ) -> Iterator[RolloutEngine | None]:
        """`started` on rank 0, which alone samples; None on the other ranks."""
        if not context.is_main:
            yield None
            return
        log.parent.mkdir(parents=True, exist_ok=True)
        with cls.started(model_dir, engine, adapter=adapter, log=log) as handle:
            yield handle

    def generate(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[Rollout]:
        """`sampling.n` rollouts per conversation, grouped by conversation in order."""
        rollouts: list[Rollout] = self._call("generate", ([list(map(dict, c)) for c in conversations], sampling))
        return rollouts

    def refit(self, directory: Path) -> float:
        """Serve the weights exported to `directory` (full weights, or an adapter on the engine's base);
        the seconds it took."""
        started = time.perf_counter()
        self._call("load_adapter" if self.adapter else "load_weights", str(directory))
        return time.perf_counter() - started

    def _call(self, command: str, payload: Any) -> Any:
        try:
            self.connection.send((command, payload))
            status, result = self.connection.recv()
        except (EOFError, OSError) as exc:
            raise RolloutError(f"the rollout engine died ({exc!r}); its log {self.log}:\n{_tail(self.log)}") from exc
        if status == "error":
            raise RolloutError(f"the rollout engine's {command} failed:\n{result}")
        return result


def _connect(socket: str, key: bytes, process: subprocess.Popen[bytes], log: Path) -> Connection:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RolloutError(f"the rollout engine exited {process.returncode} while starting:\n{_tail(log)}")
        if os.path.exists(socket):
            try:
                return Client(socket, family="AF_UNIX", authkey=key)
            except (ConnectionRefusedError, FileNotFoundError):
                pass  # bound but not yet listening: try again
            except (AuthenticationError, EOFError, OSError) as exc:
                raise RolloutError(
                    f"the rollout engine's socket refused the handshake ({exc!r}):\n{_tail(log)}"
                ) from exc
        time.sleep(0.2)
    raise RolloutError(f"the rollout engine did not start within {START_TIMEOUT_S:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text().splitlines()[-lines:])
    return "(no log)"
