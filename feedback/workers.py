"""`feedback.workers` above one: the service as that many processes on the same gRPC and HTTP ports.

One process serves about one core's worth of calls: its event loop and the producer's sender thread
share the interpreter's lock. Workers bind the same ports with SO_REUSEPORT and the kernel hands each
new connection to one of them, so a connection's calls all go to the worker it reached: the load
spreads across connections (many clients, or clients with several channels), never across the calls
of one connection. Each worker is an instance of the ledger's protocol exactly as separate replicas
are (its own producer, leases, and checks after a Redis or broker loss), so exactly-once needs nothing
more from them.

The parent serves nothing. It first binds each port once without SO_REUSEPORT, so that another server
already holding it is an error rather than a silent sharer. It passes SIGTERM and SIGINT on to the
workers and waits for their drains. A worker that stops on its own after it was serving is started
again; one that stops before it served (it cannot bind, its config fails) stops the rest, and the
parent exits 1 rather than run with fewer workers than configured.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType

from feedback.server import BindError, serve_process
from trimtab.config import TrimtabConfig

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1  # prctl(2)
_STOP_MARGIN_S = 10.0  # beyond a worker's own drain (grace, then the producer's close) before it is killed


def run_workers(config: TrimtabConfig) -> int:
    """Serve with `config.feedback.workers` processes until SIGTERM/SIGINT: 0 when all of them stopped
    cleanly, 1 if a port is taken or a worker failed."""
    settings = config.feedback
    try:
        _check_free(settings.grpc_host, settings.grpc_port, "gRPC")
        _check_free(settings.http_host, settings.http_port, "HTTP")
    except BindError as exc:
        print(f"feedback: {exc}", file=sys.stderr)
        return 1
    supervisor = _Supervisor(config)

    def stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stop(f"signal {signal.Signals(signum).name}")

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    return supervisor.run()


def worker_config(config: TrimtabConfig, index: int) -> TrimtabConfig:
    """Worker `index`'s config: its own /metrics port (the next ones after `telemetry.prometheus_port`)."""
    telemetry = config.telemetry
    if telemetry.metrics != "prometheus" or telemetry.prometheus_port == 0:
        return config
    port = telemetry.prometheus_port + index
    return config.model_copy(update={"telemetry": telemetry.model_copy(update={"prometheus_port": port})})


@dataclass
class _Worker:
    index: int
    process: BaseProcess
    ready: Connection  # the parent's end; the worker sends once it serves
    serving: bool = False


class _Supervisor:
    def __init__(self, config: TrimtabConfig) -> None:
        self._config = config
        self._context = multiprocessing.get_context("spawn")  # no forked copies of threads or sockets
        self._workers: dict[int, _Worker] = {}
        self._announced = False
        self._failed = False
        self._stop_by: float | None = None
        settings = config.feedback
        self._stop_limit_s = settings.drain_grace_s + settings.produce_timeout_s + _STOP_MARGIN_S

    def run(self) -> int:
        for index in range(self._config.feedback.workers):
            self._start(index)
        while self._workers:
            waiting: list[Connection | int] = [w.ready for w in self._workers.values() if not w.serving]
            waiting += [w.process.sentinel for w in self._workers.values()]
            woken = set(wait(waiting, timeout=1.0))
            for worker in list(self._workers.values()):
                if not worker.serving and worker.ready in woken:
                    self._serving(worker)
                if worker.process.sentinel in woken and self._workers.get(worker.index) is worker:
                    self._exited(worker)
            if self._stop_by is not None and time.monotonic() > self._stop_by:
                self._kill_the_rest()
        return 1 if self._failed else 0

    def stop(self, why: str) -> None:
        """Drain every worker (idempotent; the signal handler calls it)."""
        if self._stop_by is None:
            log.warning("feedback: stopping %d workers (%s)", len(self._workers), why)
            self._stop_by = time.monotonic() + self._stop_limit_s
        for worker in self._workers.values():
            if worker.process.is_alive():
                worker.process.terminate()

    def _start(self, index: int) -> None:
        ours, theirs = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=_serve_worker,
            args=(self._config, index, theirs, os.getpid()),
            name=f"feedback-worker-{index}",
            daemon=False,  # the parent waits for each drain itself (see stop and _kill_the_rest)
        )
        process.start()
        theirs.close()
        self._workers[index] = _Worker(index, process, ours)

    def _serving(self, worker: _Worker) -> None:
        try:
            worker.ready.recv_bytes()
        except EOFError:  # it exited before it served
            self._exited(worker)
            return
        worker.serving = True
        if not self._announced and all(w.serving for w in self._workers.values()):
            self._announced = True
            settings = self._config.feedback
            log.warning(
                "feedback: %d workers serving gRPC on %s:%d and HTTP on %s:%d",
                len(self._workers),
                settings.grpc_host,
                settings.grpc_port,
                settings.http_host,
                settings.http_port,
            )

    def _exited(self, worker: _Worker) -> None:
        worker.process.join()
        del self._workers[worker.index]
        worker.ready.close()
        code = worker.process.exitcode
        if self._stop_by is not None:
            self._failed |= code != 0
            return
        if worker.serving:
            log.warning("feedback: worker %d stopped on its own (exit code %s); starting it again", worker.index, code)
            self._start(worker.index)
            return
        log.error("feedback: worker %d stopped before it served (exit code %s)", worker.index, code)
        self._failed = True
        self.stop(f"worker {worker.index} failed")

    def _kill_the_rest(self) -> None:
        for worker in self._workers.values():
            if worker.process.is_alive():
                limit = self._stop_limit_s
                log.error("feedback: worker %d did not stop within %.0f s; killing it", worker.index, limit)
                worker.process.kill()
        self._failed = True
        self._stop_by = float("inf")


def _serve_worker(config: TrimtabConfig, index: int, ready: Connection, parent: int) -> None:
    _drain_when_orphaned(parent)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(processName)s %(name)s %(levelname)s %(message)s")
    instance = f"{socket.gethostname()}-feedback-{index}"
    code = serve_process(
        worker_config(config, index), shared_ports=True, instance=instance, on_ready=lambda: ready.send_bytes(b"1")
    )
    sys.exit(code)


def _drain_when_orphaned(parent: int) -> None:
    """Ask Linux for SIGTERM (a drain) when the parent dies: a parent killed outright (SIGKILL, OOM) would
    otherwise leave its workers serving with no one to stop them."""
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # it died before the request above
        os.kill(os.getpid(), signal.SIGTERM)


def _check_free(host: str, port: int, what: str) -> None:
    """Bind `port` once without SO_REUSEPORT: a server already on it refuses this, where the workers'
    own SO_REUSEPORT binds would share it without a word."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are no one's
            probe.bind(address)
    except OSError as exc:
        raise BindError(f"cannot bind {what} to {host}:{port}: {exc.strerror or exc}") from exc
