"""Free ports come from outside the kernel's ephemeral range, so no outgoing connection takes one first; a
process's children that listen on a port are found (a server's workers)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from trimtab import ports
from trimtab.ports import ephemeral_start, free_port, listening_children


def test_a_free_port_is_below_the_ephemeral_range_and_bindable() -> None:
    port = free_port()
    assert 10_000 <= port < ephemeral_start()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_a_port_is_handed_out_once_per_process() -> None:
    handed = [free_port() for _ in range(200)]
    assert len(set(handed)) == len(handed)


def test_a_port_something_listens_on_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        offers = iter([taken] * 10)  # the first ten candidates are the taken port
        real = ports._random.randint
        monkeypatch.setattr(ports._random, "randint", lambda low, high: next(offers, None) or real(low, high))
        assert free_port() != taken


def test_the_ephemeral_range_is_read_from_the_kernel(tmp_path: Path) -> None:
    range_file = tmp_path / "ip_local_port_range"
    range_file.write_text("40000\t60999\n")
    assert ephemeral_start(range_file) == 40_000
    assert ephemeral_start(tmp_path / "missing") == 32_768


LISTENER = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("listening", flush=True)
time.sleep(60)
"""


def test_the_children_listening_on_a_port_are_found_and_no_others() -> None:
    port, other = free_port(), free_port()
    children = [
        subprocess.Popen([sys.executable, "-c", LISTENER, str(p)], stdout=subprocess.PIPE) for p in (port, other)
    ]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for child in children:
            assert child.stdout is not None and child.stdout.readline() == b"listening\n"
        assert [c.pid for c in listening_children(os.getpid(), port)] == [children[0].pid]
        children[0].kill()
        children[0].wait()
        assert listening_children(os.getpid(), port) == []
    finally:
        for process in [*children, sleeper]:
            process.kill()
            process.wait()
