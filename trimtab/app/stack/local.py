"""`trimtab up | down | status`: the broker and Redis every component needs, on this machine.

A service is started only when nothing answers at its configured address and that address is
loopback; whatever already answers there (a real Kafka, the machine's Redis) is used as is and never
stopped. `down` stops only what `up` started, found through the pid files in `stack.run_dir`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from trimtab.app.stack.probes import kafka_ready, port_open, redis_ready
from trimtab.app.stack.process import ServiceProcess
from trimtab.app.stack.services import ServiceSpec, StackError, load_services
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig

State = Literal["started", "running", "external", "down"]
Report = Callable[[str], None]


@dataclass(frozen=True)
class Endpoint:
    """Where a service is expected, and how to ask it whether it is ready."""

    name: str
    host: str
    port: int
    address: str  # as the config spells it, for messages and clients
    ready: Callable[[], bool]

    @property
    def local(self) -> bool:
        """Whether the address is one of this machine's (loopback or an interface's), where trimtab can start
        the service: a socket binds to it."""
        try:
            family, kind, _, _, address = socket.getaddrinfo(self.host, 0, type=socket.SOCK_STREAM)[0]
            with socket.socket(family, kind) as sock:
                sock.bind(address)
            return True
        except OSError:
            return False


@dataclass(frozen=True)
class ServiceState:
    name: str
    address: str
    state: State
    pid: int | None = None

    def describe(self) -> str:
        return {
            "started": f"started (pid {self.pid})",
            "running": f"running (pid {self.pid}, started by trimtab up)",
            "external": "reachable (not started by trimtab; left alone)",
            "down": "down",
        }[self.state]


def endpoints(config: TrimtabConfig) -> list[Endpoint]:
    kafka_host, kafka_port = config.kafka.first_server
    servers = config.kafka.bootstrap_servers
    url = urlsplit(config.redis.url)
    redis_url = config.redis.url
    return [
        Endpoint("broker", kafka_host, kafka_port, servers, lambda: kafka_ready(servers)),
        Endpoint("redis", url.hostname or "", url.port or 6379, redis_url, lambda: redis_ready(redis_url)),
    ]


def status(config: TrimtabConfig) -> list[ServiceState]:
    states = []
    for endpoint in endpoints(config):
        record = ServiceProcess(endpoint.name, config.stack.run_dir).record()
        if record is not None:
            states.append(ServiceState(endpoint.name, endpoint.address, "running", int(str(record["pid"]))))
        elif endpoint.ready():
            states.append(ServiceState(endpoint.name, endpoint.address, "external"))
        else:
            states.append(ServiceState(endpoint.name, endpoint.address, "down"))
    return states


def up(config: TrimtabConfig, report: Report = lambda _: None) -> list[ServiceState]:
    """Bring every service to ready and create the topics; on failure, stop what this call started."""
    specs = load_services(config.stack.services_file)
    states: list[ServiceState] = []
    try:
        for endpoint in endpoints(config):
            spec: ServiceSpec = getattr(specs, endpoint.name)
            states.append(_bring_up(endpoint, spec, config))
            report(f"{endpoint.name:<7} {endpoint.address:<28} {states[-1].describe()}")
        counts = ensure_topics(config.kafka)
        report("topics  " + ", ".join(f"{name} ({n} partitions)" for name, n in sorted(counts.items())))
    except BaseException:
        for state in states:
            if state.state == "started":
                ServiceProcess(state.name, config.stack.run_dir).stop(config.stack.stop_timeout_s)
        raise
    return states


def down(config: TrimtabConfig) -> list[str]:
    """Stop the services `up` started; returns their names."""
    return [
        endpoint.name
        for endpoint in endpoints(config)
        if ServiceProcess(endpoint.name, config.stack.run_dir).stop(config.stack.stop_timeout_s)
    ]


def _bring_up(endpoint: Endpoint, spec: ServiceSpec, config: TrimtabConfig) -> ServiceState:
    process = ServiceProcess(endpoint.name, config.stack.run_dir)
    record = process.record()
    if record is not None:
        _wait_ready(endpoint, process, config.stack.start_timeout_s)
        return ServiceState(endpoint.name, endpoint.address, "running", int(str(record["pid"])))
    if endpoint.ready():
        return ServiceState(endpoint.name, endpoint.address, "external")
    if not endpoint.local:
        raise StackError(
            f"{endpoint.name}: nothing answers at {endpoint.address}, and it is not on this machine, "
            "so trimtab cannot start it there"
        )
    if port_open(endpoint.host, endpoint.port):
        raise StackError(
            f"{endpoint.name}: port {endpoint.host}:{endpoint.port} is in use by a program that is not a "
            f"{spec.probe} server; free the port or configure another"
        )
    pid = process.start(spec.argv(endpoint.host, endpoint.port, config.stack.run_dir.resolve()), endpoint.address)
    try:
        _wait_ready(endpoint, process, config.stack.start_timeout_s)
    except StackError:
        process.stop(config.stack.stop_timeout_s)
        raise
    return ServiceState(endpoint.name, endpoint.address, "started", pid)


def _wait_ready(endpoint: Endpoint, process: ServiceProcess, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if endpoint.ready():
            return
        if process.exited():
            raise StackError(
                f"{endpoint.name} exited during start-up; last lines of {process.log_file}:\n{process.log_tail()}"
            )
        time.sleep(0.2)
    raise StackError(
        f"{endpoint.name} not ready at {endpoint.address} after {timeout_s:g}s; "
        f"last lines of {process.log_file}:\n{process.log_tail()}"
    )
