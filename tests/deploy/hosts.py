"""Hosts for multi-node tests on one machine: Linux network namespaces, each with its own network stack
(its own loopback, addresses and ports), cabled by veth pairs to a bridge in the root namespace, where
the services they share (broker, Redis) listen on the bridge's address. Needs root (CAP_NET_ADMIN), as
CI and dev machines run; everything made is removed on exit."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str
    interface: str = "eth0"  # inside the namespace, as in a pod

    def command(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, *argv]

    def kill_everything(self) -> int:
        """SIGKILL every process in the namespace: the host's power cord. How many there were."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, timeout=30)
        pids = [int(pid) for pid in listed.stdout.split()]
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)


@dataclass(frozen=True)
class Network:
    bridge_address: str  # where the shared services listen, reachable from every host
    hosts: tuple[Host, ...]


@contextmanager
def hosts(count: int) -> Iterator[Network]:
    """`count` hosts on a bridge of their own, in a /24 no other run is likely to pick."""
    tag = uuid.uuid4().hex[:6]
    subnet = f"10.{random.randint(64, 127)}.{random.randint(0, 255)}"
    bridge = f"ttb{tag}"
    made: list[str] = []
    try:
        ip("link", "add", bridge, "type", "bridge")
        ip("addr", "add", f"{subnet}.1/24", "dev", bridge)
        ip("link", "set", bridge, "up")
        result = []
        for index in range(count):
            host = Host(namespace=f"tt{tag}n{index}", address=f"{subnet}.{index + 2}")
            ip("netns", "add", host.namespace)
            made.append(host.namespace)
            outside = f"ttv{tag}{index}"
            ip("link", "add", outside, "type", "veth", "peer", "name", host.interface, "netns", host.namespace)
            ip("link", "set", outside, "master", bridge, "up")
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.interface)
            ip("-n", host.namespace, "link", "set", host.interface, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
            result.append(host)
        yield Network(bridge_address=f"{subnet}.1", hosts=tuple(result))
    finally:
        for namespace in made:
            Host(namespace, "").kill_everything()
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, timeout=30)  # takes the veths along
