"""Rails checks in processes of their own: NeMo's Colang runtime off the serving process's event loop.

NeMo's runtime is pure Python, 4-8 ms of CPU a check: run on the event loop, every check held the
interpreter lock that the loop's other requests (and every other tenant's) wait for, and the rails of a
busy server could use one core at most. Here `guardrails.check_processes` children each load the same
rails directory and run checks concurrently on their own event loops; the serving process sends each
check to the child with the fewest in flight and awaits the result.

Embeddings stay in the serving process: a child's rails ask it over the pipe, and its `Embedder` (one
encoder process, one cache) answers them, batching the texts that all the children's checks ask for at
once. The example sentences a child embeds when it loads are already in that cache.

    parent -> child   ("check", id, stage, text, prompt)      ("vectors", id, error, array)    ("stop",)
    child -> parent   ("ready", pid) | ("failed", message)    ("result", id, error, CheckResult)
                      ("embed", id, texts)

A child that dies fails the checks it held, which block (`guardrails.error`: a check that cannot run
must not let text through), and is started again. A child exits when asked ("stop") or when its pipe
closes (the serving process died).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Pipe
from pathlib import Path
from typing import Any

import numpy as np

from guardrails.decisions import Action, CheckResult, Decision, Stage
from guardrails.policy import GuardrailsConfigError
from guardrails.semantic import CACHE_SIZE, Embedder
from trimtab.suite import ProtectedTerms

log = logging.getLogger(__name__)
START_TIMEOUT_S = 120.0  # importing NeMo and loading the rails on a busy 2-core machine
STOP_TIMEOUT_S = 10.0
CHECK_TIMEOUT_S = 60.0  # a check takes milliseconds: a child this late is stuck, and its checks block


class CheckProcessGone(RuntimeError):
    """The child running a check exited before answering."""


class CheckProcessesDidNotStart(RuntimeError):
    """A child died or timed out while loading rails it did not refuse: the machine, not the config."""


@dataclass
class _Child:
    process: subprocess.Popen[bytes]
    conn: Connection
    pending: dict[int, asyncio.Future[CheckResult]] = field(default_factory=dict)
    ready: bool = False  # loaded the rails: takes checks
    alive: bool = True  # False once stopped by this process, refused to start, or seen dead
    _sending: threading.Lock = field(default_factory=threading.Lock)  # the event loop's sends and `_stop`'s

    def send(self, message: tuple[Any, ...]) -> None:
        with self._sending:
            self.conn.send(message)


class CheckProcesses:
    """`check` as `Guardrails.check`, on `count` children holding the rails of `config_dir` as it is now: the
    directory is copied first, so a child started again later loads the rails being served, not a newer
    (or broken) edit that the reload has yet to judge."""

    def __init__(
        self,
        config_dir: Path,
        embedder: Embedder,
        protected: ProtectedTerms,
        count: int,
        on_exit: Callable[[], None] = lambda: None,  # a child died (counted by the caller)
    ) -> None:
        self.config_dir = config_dir
        self._on_death = on_exit
        self._embedder = embedder
        self._protected = protected
        self._count = count
        self._children: list[_Child] = []  # from its start, so that `close` stops it whatever happens
        self._ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._copy: Path | None = None
        self._restarts: set[asyncio.Task[None]] = set()
        self._embeds: set[asyncio.Task[None]] = set()  # never cancelled: a check waiting on one would hang

    async def start(self) -> None:
        """Start every child and wait until each has loaded the rails: GuardrailsConfigError if one refuses
        them, CheckProcessesDidNotStart if one dies or takes over START_TIMEOUT_S. On any failure, or if
        cancelled, the children already started are stopped."""
        self._loop = asyncio.get_running_loop()
        try:
            self._copy = await asyncio.to_thread(_private_copy, self.config_dir)
            # Every start to its end (a failed one stops its own child) before any failure is raised.
            started = await asyncio.gather(*(self._start_child() for _ in range(self._count)), return_exceptions=True)
        except BaseException:
            await self.close()
            raise
        failures = [result for result in started if isinstance(result, BaseException)]
        if failures:
            await self.close()
            raise failures[0]

    @property
    def pids(self) -> list[int]:
        """The running children's process ids."""
        return [child.process.pid for child in self._children if child.alive and child.ready]

    async def check(self, stage: Stage, text: str, prompt: str = "") -> CheckResult:
        live = [child for child in self._children if child.alive and child.ready]
        if not live or self._closing:
            return _failed(stage, text, "no rails check process is running")
        child = min(live, key=lambda c: len(c.pending))
        request_id = next(self._ids)
        future: asyncio.Future[CheckResult] = asyncio.get_running_loop().create_future()
        child.pending[request_id] = future
        try:
            child.send(("check", request_id, stage.value, text, prompt))
            return await asyncio.wait_for(future, CHECK_TIMEOUT_S)
        except (CheckProcessGone, OSError) as exc:
            return _failed(stage, text, f"the rails check process running it exited ({exc})")
        except TimeoutError:
            return _failed(stage, text, f"no answer from its rails check process in {CHECK_TIMEOUT_S:.0f} s")
        finally:
            child.pending.pop(request_id, None)

    async def close(self) -> None:
        """Let the checks in flight finish (bounded), then stop every child."""
        self._closing = True
        for task in list(self._restarts):
            task.cancel()
        await asyncio.gather(*self._restarts, return_exceptions=True)
        in_flight = [future for child in self._children for future in child.pending.values()]
        if in_flight:
            await asyncio.wait(in_flight, timeout=STOP_TIMEOUT_S)
        children, self._children = self._children, []
        await asyncio.gather(*(asyncio.to_thread(_stop, child) for child in children))
        for child in children:  # still unanswered: blocked, never left waiting
            for future in child.pending.values():
                if not future.done():
                    future.set_exception(CheckProcessGone("stopped before it answered"))
        if self._copy is not None:
            await asyncio.to_thread(shutil.rmtree, self._copy.parent, True)

    async def _start_child(self) -> _Child:
        ours, theirs = Pipe()
        argv = [sys.executable, "-m", __name__, str(theirs.fileno())]
        process = subprocess.Popen(argv, pass_fds=[theirs.fileno()])
        theirs.close()
        child = _Child(process, ours)
        self._children.append(child)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        threading.Thread(
            target=self._read, args=(child, ready), name=f"guardrails-check-{process.pid}", daemon=True
        ).start()
        try:
            child.send((str(self._copy), self._protected, self._embedder.dimension))
            await asyncio.wait_for(ready, START_TIMEOUT_S)
        except BaseException as exc:
            if child in self._children:  # not already taken by `close`
                self._children.remove(child)
            await asyncio.to_thread(_stop, child)
            if isinstance(exc, TimeoutError):
                raise CheckProcessesDidNotStart(
                    f"a rails check process did not load {self.config_dir} within {START_TIMEOUT_S:.0f} s"
                ) from None
            raise
        child.ready = True
        return child

    def _read(self, child: _Child, ready: asyncio.Future[None]) -> None:
        """The child's messages, on a thread of their own (blocked in `recv` without the interpreter lock).
        Whatever ends it (the pipe's end, a message that does not unpickle) is the child's death to the loop."""
        assert self._loop is not None
        loop = self._loop
        try:
            while True:
                message = child.conn.recv()
                loop.call_soon_threadsafe(self._on_message, child, ready, message)
        except BaseException:  # TypeError too: `_stop` closed the pipe under this recv
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._on_exit, child, ready)

    def _on_message(self, child: _Child, ready: asyncio.Future[None], message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            if not ready.done():
                ready.set_result(None)
        elif kind == "failed":
            child.alive = False  # its exit is this failure, not a death to replace
            if not ready.done():
                ready.set_exception(GuardrailsConfigError(f"a rails check process could not start: {message[1]}"))
        elif kind == "embed":
            task = asyncio.get_running_loop().create_task(self._embed(child, message[1], message[2]))
            self._embeds.add(task)
            task.add_done_callback(self._embeds.discard)
        elif kind == "result":
            _, request_id, error, result = message
            future = child.pending.get(request_id)
            if future is not None and not future.done():
                if error is None:
                    future.set_result(result)
                else:
                    future.set_exception(RuntimeError(error))

    async def _embed(self, child: _Child, request_id: int, texts: list[str]) -> None:
        try:
            vectors, error = await self._embedder.embed(texts), None
        except Exception as exc:  # the child's rail fails (and blocks) with it
            vectors, error = None, f"{type(exc).__name__}: {exc}"
        if child.alive:
            with contextlib.suppress(OSError):  # the child died meanwhile: its reader reports it
                child.send(("vectors", request_id, error, vectors))

    def _on_exit(self, child: _Child, ready: asyncio.Future[None]) -> None:
        if not ready.done():
            ready.set_exception(CheckProcessesDidNotStart("a rails check process exited while loading the rails"))
        if not child.alive:  # stopped by this process, or refused the rails: nothing to replace
            return
        child.alive = False
        for future in child.pending.values():
            if not future.done():
                future.set_exception(CheckProcessGone("it exited"))
        if self._closing or not child.ready:
            return
        self._on_death()
        task = asyncio.get_running_loop().create_task(self._replace(child))
        self._restarts.add(task)
        task.add_done_callback(self._restarts.discard)

    async def _replace(self, dead: _Child) -> None:
        await asyncio.to_thread(_stop, dead)
        log.error(
            "a rails check process exited (code %s): the checks it held blocked; starting another",
            dead.process.returncode,
        )
        self._children.remove(dead)
        while not self._closing:
            try:
                await self._start_child()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("a rails check process could not be started again; trying again in 5 s")
                await asyncio.sleep(5.0)


def _failed(stage: Stage, text: str, why: str) -> CheckResult:
    log.error("a rails check could not run (%s): blocked", why)
    return CheckResult(Action.BLOCK, text, (Decision("guardrails", stage, Action.BLOCK, "guardrails.error"),))


def _private_copy(config_dir: Path) -> Path:
    """`config_dir` copied into a new temporary directory (whose parent `close` removes)."""
    if not (config_dir / "config.yml").is_file():
        raise GuardrailsConfigError(f"{config_dir / 'config.yml'}: missing (a guardrails directory holds config.yml)")
    return Path(shutil.copytree(config_dir, Path(tempfile.mkdtemp(prefix="trimtab-rails-")) / "rails"))


def _stop(child: _Child) -> None:
    child.alive = False
    # Asked, not hung up on: closing the pipe here would not wake this process's reader from its recv, and
    # the child would not see the end of the pipe until both were gone.
    with contextlib.suppress(OSError):
        child.send(("stop",))
    try:
        child.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.process.kill()
        child.process.wait()
    child.conn.close()


class _ParentEmbedder:
    """The child's `Embedder`: texts it has not seen are asked of the parent's, the answers kept (an LRU as
    the parent's: a stream's windows and one model's answers repeat sentences, each a round trip saved).
    `encode` (loading) blocks on the pipe before the child's reader runs; `embed` (checks) awaits the
    reader's delivery of the answer."""

    device = "cpu"  # the child's faiss indexes stay on the CPU: embeddings are the parent's device's work
    threads = 1

    def __init__(self, conn: Connection, dimension: int, send: Callable[[tuple[Any, ...]], None]) -> None:
        self.dimension = dimension
        self._conn = conn
        self._send = send
        self._ids = itertools.count()
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.waiting: dict[int, asyncio.Future[np.ndarray]] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self._send(("embed", -1, list(texts)))
        _, _, error, vectors = self._conn.recv()
        if error is not None:
            raise RuntimeError(error)
        return np.asarray(vectors, dtype=np.float32)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        found = {text: self._cache[text] for text in texts if text in self._cache}
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        if missing:
            request_id = next(self._ids)
            future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
            self.waiting[request_id] = future
            try:
                self._send(("embed", request_id, missing))
                found.update(zip(missing, await future, strict=True))
            finally:
                self.waiting.pop(request_id, None)
        for text, vector in found.items():
            self._cache[text] = vector
            self._cache.move_to_end(text)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return np.stack([found[text] for text in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def close(self) -> None:
        pass


def main(argv: list[str]) -> int:
    """The child: `python -m guardrails.check_process FD`."""
    from guardrails.runtime import Guardrails

    conn = Connection(int(argv[0]))
    lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with lock:
            conn.send(message)

    try:
        config_dir, protected, dimension = conn.recv()
        embedder = _ParentEmbedder(conn, dimension, send)
        rails = Guardrails.load(Path(config_dir), embedder, protected)  # type: ignore[arg-type]
    except (EOFError, OSError):
        return 0
    except Exception as exc:  # said to the parent, which raises it
        send(("failed", f"{type(exc).__name__}: {exc}"))
        return 1
    send(("ready", os.getpid()))
    asyncio.run(_serve(conn, rails, embedder, send))
    return 0


async def _serve(conn: Connection, rails: Any, embedder: _ParentEmbedder, send: Callable[..., None]) -> None:
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()

    async def check(request_id: int, stage: str, text: str, prompt: str) -> None:
        try:
            result, error = await rails.check(Stage(stage), text, prompt), None
        except Exception as exc:
            result, error = None, f"{type(exc).__name__}: {exc}"
        try:
            send(("result", request_id, error, result))
        except Exception as exc:  # e.g. a result that does not pickle: the parent still hears, and blocks
            send(("result", request_id, f"the check's result could not be sent: {exc}", None))

    def deliver(message: tuple[Any, ...]) -> None:
        if message[0] == "stop":
            closed.set()
        elif message[0] == "check":
            task = loop.create_task(check(*message[1:]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif message[0] == "vectors":
            _, request_id, error, vectors = message
            future = embedder.waiting.get(request_id)
            if future is not None and not future.done():
                if error is None:
                    future.set_result(np.asarray(vectors, dtype=np.float32))
                else:
                    future.set_exception(RuntimeError(error))

    def read() -> None:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):  # the parent closed the pipe or died
                loop.call_soon_threadsafe(closed.set)
                return
            loop.call_soon_threadsafe(deliver, message)

    threading.Thread(target=read, name="guardrails-check-reader", daemon=True).start()
    await closed.wait()


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(main(sys.argv[1:]))
