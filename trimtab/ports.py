"""Free local ports for services a process starts for itself (the demo's, the tests' and the benches'), and
which of a process's children listen on a port.

A port the kernel hands out for `bind(("127.0.0.1", 0))` comes from the ephemeral range, the same range
it draws from for every outgoing connection: between handing such a port out and the service binding it,
any client connection on the machine (a Redis or Kafka client of the same run) may take it, and the
service then fails with "address already in use". So the ports here come from below that range, where
the kernel never assigns one on its own, at random, each checked by a bind, and none twice in a process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

import psutil

_LOWEST = 10_000  # below: well-known and registered services (Redis 6379, PostgreSQL 5432, ...)
_DEFAULT_EPHEMERAL_START = 32_768  # Linux's default when /proc does not say
_handed_out: set[int] = set()
_lock = threading.Lock()
_random = random.Random()  # its own generator: a test that seeds `random` must not make runs pick alike


def ephemeral_start(range_file: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the kernel's ephemeral range."""
    try:
        return int(range_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return _DEFAULT_EPHEMERAL_START


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now, outside the ephemeral range, not handed out before by this process."""
    highest = ephemeral_start() - 1
    if highest <= _LOWEST:  # an unusual kernel setting: the kernel's own choice is all there is
        return _kernel_port(host)
    with _lock:
        for _ in range(200):
            port = _random.randint(_LOWEST, highest)
            if port not in _handed_out and _bindable(host, port):
                _handed_out.add(port)
                return port
    raise OSError(f"no free port on {host} between {_LOWEST} and {highest} after 200 tries")


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def listening_children(pid: int, port: int) -> list[psutil.Process]:
    """The children of process `pid` listening on TCP `port` (a server's workers sharing it)."""
    listening = []
    for child in psutil.Process(pid).children():
        try:
            connections = child.net_connections("tcp")
        except psutil.NoSuchProcess:  # a child that has just exited
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections):
            listening.append(child)
    return listening
