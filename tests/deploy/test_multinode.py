"""The online learner on two hosts, launched by the very script deploy/k8s runs in each learner pod:
two network namespaces (tests/deploy/hosts.py) each run one torchrun agent with one gloo rank, meeting
through c10d rendezvous hosted by node 0, reading a real broker and writing the registry on storage both
see. It learns the same loss curve as one node with the same two ranks, and a node lost mid-round (every
process in its namespace SIGKILLed) comes back as the Job would bring it back: the surviving agent waits in
the rendezvous, both resume from the newest checkpoint, and every event is trained exactly once along the
published lineage."""

from __future__ import annotations

import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from tests.conftest import REPO, config_with, free_port
from tests.deploy.hosts import Host, Network, hosts
from tests.deploy.k8s import Manifests, render
from tests.learner.online_support import lineage_ids, newest_checkpoint, produce, small_learner_env
from tests.learner.tiny import make_tiny_model
from trimtab.app.stack import down, up
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig, load_config
from trimtab.registry import Registry

pytestmark = pytest.mark.integration
RENDEZVOUS_PORT = 29400


@pytest.fixture(scope="module")
def network() -> Iterator[Network]:
    with hosts(2) as network:
        yield network


@pytest.fixture(scope="module")
def services(network: Network, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrimtabConfig]:
    """A broker and a Redis of their own on the bridge, where both hosts reach them."""
    address = network.bridge_address
    config = config_with(
        tmp_path_factory.mktemp("shared-services"),
        kafka__bootstrap_servers=f"{address}:{free_port()}",
        redis__url=f"redis://{address}:{free_port()}/0",
    )
    up(config)
    yield config
    down(config)


@dataclass(frozen=True)
class Launch:
    """The learner container's command line and its literal environment in the dev-cpu overlay: what each
    pod runs. (TRIMTAB_CONFIG names the cluster's config file; here the test's variables configure.)"""

    script: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def launch() -> Launch:
    container = Manifests("dev-cpu", render("dev-cpu")).container("Job", "learner")
    (script,) = container["args"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e and e["name"] != "TRIMTAB_CONFIG"}
    return Launch(script=str(script), env=env)


@dataclass(frozen=True)
class Job:
    """A learner job: its launch script with the settings a pod gets from the Job and the ConfigMap."""

    script: str
    env: dict[str, str]
    workdir: Path

    @property
    def checkpoints(self) -> Path:
        return self.workdir / "checkpoints"

    @property
    def registry(self) -> Registry:
        return Registry(self.workdir / "registry")

    def start(self, host: Host, index: int, log: IO[str]) -> subprocess.Popen[str]:
        """The pod of completion index `index`, on `host`."""
        env = self.env | {"JOB_COMPLETION_INDEX": str(index), "LEARNER_ADDRESS": host.address}
        env["GLOO_SOCKET_IFNAME"] = host.interface  # a pod's only interface; here the host's hostname is shared
        argv = host.command(["/bin/sh", "-c", self.script])
        return subprocess.Popen(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def job(launch: Launch, base: dict[str, str], workdir: Path, rendezvous: Host, nodes: int, ranks_per_node: int) -> Job:
    """One run's own registry, checkpoints, consumer group and key prefix, on the shared topic in `base`."""
    env = (
        base
        | launch.env
        | {
            "TRIMTAB_REGISTRY__ROOT": str(workdir / "registry"),
            "TRIMTAB_LEARNER__ONLINE__CHECKPOINT_DIR": str(workdir / "checkpoints"),
            "TRIMTAB_LEARNER__ONLINE__GROUP_ID": f"learner-{workdir.name}",
            "TRIMTAB_REDIS__KEY_PREFIX": f"multinode-{uuid.uuid4().hex[:6]}:",
            "LEARNER_NODES": str(nodes),
            "LEARNER_PROCS_PER_NODE": str(ranks_per_node),
            "LEARNER_RENDEZVOUS": f"{rendezvous.address}:{RENDEZVOUS_PORT}",
            "LEARNER_RUN_ID": f"run-{workdir.name}",
        }
    )
    workdir.mkdir()
    return Job(script=launch.script, env=env, workdir=workdir)


def learner_env(services: TrimtabConfig, tmp_path: Path) -> dict[str, str]:
    """A small online learner (rounds of exactly 6 events, stopping when idle) on a fresh topic of the
    shared broker, the tiny model, and the venv's torchrun on PATH."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")}
    env |= small_learner_env(services, tmp_path, partitions=1) | {
        "TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES": "6",
        "TRIMTAB_LEARNER__ONLINE__ROUND__MAX_EXAMPLES": "6",
        "TRIMTAB_LEARNER__ONLINE__STOP_WHEN_IDLE_S": "4",
        "TRIMTAB_MODEL__PATH": str(make_tiny_model(tmp_path / "model")),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    ensure_topics(load_config(path=None, environ=env).kafka)
    return env


def finish(processes: list[subprocess.Popen[str]], logs: list[Path], timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    for process, log in zip(processes, logs, strict=True):
        code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        assert code == 0, f"{log.name} exited {code}:\n{log.read_text()[-4000:]}"


def loss_curve(registry: Registry) -> list[dict[str, float]]:
    """Each published policy version's training losses, round by round."""
    versions = [v for v in registry.versions() if v.algorithm == "online"]
    return [{k: v for k, v in version.metrics.items() if k.endswith("loss")} for version in versions]


def test_two_nodes_learn_the_same_loss_curve_as_one_node_with_the_same_ranks(
    network: Network, services: TrimtabConfig, launch: Launch, tmp_path: Path
) -> None:
    base = learner_env(services, tmp_path)
    config = load_config(path=None, environ=base)
    ids = produce(config, 24)
    curves = {}
    for name, nodes, ranks in (("one-node", 1, 2), ("two-nodes", 2, 1)):
        run = job(launch, base, tmp_path / name, rendezvous=network.hosts[0], nodes=nodes, ranks_per_node=ranks)
        logs = [run.workdir / f"node{index}.log" for index in range(nodes)]
        finish([run.start(network.hosts[index], index, logs[index].open("w")) for index in range(nodes)], logs)
        curves[name] = loss_curve(run.registry)
        policy = [v for v in run.registry.versions() if v.algorithm == "online"]
        assert sorted(lineage_ids(run.registry, policy[-1].id)) == sorted(ids["thumb"] + ids["pairwise"])
    assert len(curves["one-node"]) >= 3 and all(curves["one-node"])
    for one, two in zip(curves["one-node"], curves["two-nodes"], strict=True):
        assert one.keys() == two.keys()
        assert all(math.isclose(one[k], two[k], rel_tol=1e-4, abs_tol=1e-6) for k in one), (one, two)


@pytest.mark.parametrize("lost", [1, pytest.param(0, marks=pytest.mark.long)], ids=["node1", "node0"])
def test_a_node_lost_mid_round_comes_back_and_nothing_is_trained_twice(
    network: Network, services: TrimtabConfig, launch: Launch, tmp_path: Path, lost: int
) -> None:
    base = learner_env(services, tmp_path)
    ids = produce(load_config(path=None, environ=base), 36)
    hosts = network.hosts
    run = job(launch, base, tmp_path / "lost-node", rendezvous=hosts[0], nodes=2, ranks_per_node=1)
    logs = {index: run.workdir / f"node{index}.log" for index in (0, 1)}
    nodes = {index: run.start(hosts[index], index, logs[index].open("w")) for index in (0, 1)}
    deadline = time.monotonic() + 240
    while newest_checkpoint(run.checkpoints) < 1 and time.monotonic() < deadline:  # a round done: mid-run
        assert all(node.poll() is None for node in nodes.values()), logs[0].read_text()[-3000:]
        time.sleep(0.1)
    time.sleep(random.Random(11).uniform(0.0, 1.5))  # anywhere in the next round
    assert nodes[lost].poll() is None and hosts[lost].kill_everything() >= 2  # its agent and its rank
    nodes[lost].wait(timeout=30)
    rounds_before = newest_checkpoint(run.checkpoints)
    other = 1 - lost
    if lost == 0:  # the rendezvous store went with node 0: node 1's agent fails on its own ...
        assert nodes[other].wait(timeout=240) != 0
    time.sleep(3)  # the Job controller noticing, a new pod starting
    again = {index: run.workdir / f"node{index}-again.log" for index in (lost, *([other] if lost == 0 else []))}
    for index, log in again.items():  # ... and the Job starts every failed index again
        nodes[index] = run.start(hosts[index], index, log.open("w"))
    finish([nodes[0], nodes[1]], [again.get(0, logs[0]), again.get(1, logs[1])])
    if lost == 1:  # node 0's agent never exited: it stopped its rank, met the new node, started a rank that resumed
        assert "online learner: resuming after round" in logs[0].read_text()
    registry = run.registry
    policy = [v for v in registry.versions() if v.algorithm == "online"]
    assert sorted(lineage_ids(registry, policy[-1].id)) == sorted(ids["thumb"] + ids["pairwise"])
    assert newest_checkpoint(run.checkpoints) > rounds_before
