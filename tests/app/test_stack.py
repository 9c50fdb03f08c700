"""The local stack: `up` starts what is missing and leaves what answers alone; `down` stops only
what `up` started; failures say why, show the log, and leave nothing running."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import redis
from kafka import KafkaAdminClient

from tests.cli import run_cli
from tests.conftest import REPO, config_with, free_port, kill_local, stack_of_its_own
from trimtab.app.stack import StackError, down, status, up
from trimtab.app.stack.local import Endpoint
from trimtab.app.stack.probes import port_open
from trimtab.config import TrimtabConfig

pytestmark = pytest.mark.integration


def test_session_stack_is_up_with_topics_and_partitions(stack: TrimtabConfig) -> None:
    states = {state.name: state.state for state in status(stack)}
    assert states["broker"] == "running"  # started by this run's `up`, found by its pid file
    assert states["redis"] in ("external", "running")
    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap_servers)
    try:
        described = {
            t["name"]: len(t["partitions"]) for t in admin.describe_topics([s.name for s in stack.kafka.topics.all()])
        }
    finally:
        admin.close()
    assert described == {spec.name: spec.partitions for spec in stack.kafka.topics.all()}


def test_second_up_is_idempotent(stack: TrimtabConfig) -> None:
    states = up(stack)
    assert [s.state for s in states if s.name == "broker"] == ["running"]


def test_up_starts_what_is_missing_and_down_stops_only_that(tmp_path: Path) -> None:
    config = config_with(
        tmp_path,
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
        redis__url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there: up must start one
    )
    try:
        started = {state.name: state.state for state in up(config)}
        assert started == {"broker": "started", "redis": "started"}
        assert redis.Redis.from_url(config.redis.url).ping()
        assert {s.name: s.state for s in status(config)} == {"broker": "running", "redis": "running"}
    finally:
        assert sorted(down(config)) == ["broker", "redis"]
    assert not port_open(*config.kafka.first_server)
    assert {s.name: s.state for s in status(config)} == {"broker": "down", "redis": "down"}
    assert down(config) == []  # nothing of ours is left to stop


def test_the_local_redis_keeps_every_acknowledged_write_through_a_kill(stack: TrimtabConfig, tmp_path: Path) -> None:
    """The feedback ledger lives there: a Redis that crashes and starts again must still know it."""
    config = stack_of_its_own(stack, tmp_path)
    try:
        up(config)
        client = redis.Redis.from_url(config.redis.url)
        with client.pipeline(transaction=False) as pipe:
            for i in range(2000):
                pipe.set(f"k{i}", i)
            pipe.execute()
        client.incr("counter")  # the last write before the crash
        kill_local(config, "redis")
        assert {s.name: s.state for s in up(config)}["redis"] == "started"
        assert client.mget([f"k{i}" for i in range(2000)]) == [str(i).encode() for i in range(2000)]
        assert client.get("counter") == b"1"
        client.close()
    finally:
        down(config)


def test_down_leaves_an_external_redis_running(stack: TrimtabConfig, tmp_path: Path) -> None:
    config = config_with(tmp_path, kafka__bootstrap_servers=stack.kafka.bootstrap_servers, redis__url=stack.redis.url)
    assert {s.name: s.state for s in up(config)} == {"broker": "external", "redis": "external"}
    assert down(config) == []
    assert redis.Redis.from_url(stack.redis.url).ping()


def test_port_held_by_another_program_is_refused_and_nothing_is_left_running(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        config = config_with(
            tmp_path,
            redis__url=f"redis://127.0.0.1:{free_port()}/0",
            kafka__bootstrap_servers=f"127.0.0.1:{port}",
        )
        with pytest.raises(StackError, match=f"port 127.0.0.1:{port} is in use by a program that is not a kafka"):
            up(config)
    assert list(tmp_path.glob("*.pid")) == []


def test_a_service_that_dies_at_start_reports_its_log_tail(tmp_path: Path) -> None:
    services = (
        (REPO / "deploy/local/services.yaml").read_text().replace("--storage-engine=memory://tansu/", "--no-such-flag")
    )
    (tmp_path / "services.yaml").write_text(services)
    config = config_with(
        tmp_path,
        stack__services_file=str(tmp_path / "services.yaml"),
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
    )
    with pytest.raises(StackError, match=r"broker exited during start-up; last lines of .*broker.log:\n.*no-such-flag"):
        up(config)
    assert status(config)[0].state == "down"


def test_a_service_that_never_answers_times_out_with_its_log_tail(tmp_path: Path) -> None:
    # A "broker" that runs but never answers on its port: redis-server on a unix socket only.
    (tmp_path / "services.yaml").write_text(
        (REPO / "deploy/local/services.yaml").read_text().split("broker:")[0]
        + "broker:\n  description: never answers\n  binary: redis-server\n"
        + '  args: ["--port", "0", "--unixsocket", "{run_dir}/never.sock", "--save", ""]\n'
        + "  probe: kafka\n"
        + "redis:"
        + (REPO / "deploy/local/services.yaml").read_text().split("redis:", 1)[1]
    )
    config = config_with(
        tmp_path,
        stack__services_file=str(tmp_path / "services.yaml"),
        stack__start_timeout_s="1.5",
        kafka__bootstrap_servers=f"127.0.0.1:{free_port()}",
    )
    with pytest.raises(
        StackError, match=r"broker not ready at 127.0.0.1:\d+ after 1.5s; last lines of .*broker.log:\n"
    ):
        up(config)
    assert list(tmp_path.glob("*.pid")) == []


def test_only_this_machines_addresses_count_as_startable_here() -> None:
    # Services started on an interface's address serve the multi-host tests (tests/deploy/test_multinode.py).
    def local(host: str) -> bool:
        return Endpoint("broker", host, 9092, f"{host}:9092", lambda: False).local

    listed = subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    interfaces = [a["local"] for i in json.loads(listed) for a in i["addr_info"] if not a["local"].startswith("127.")]
    assert local("127.0.0.1") and local("localhost") and local("::1") and local("127.1.2.3")
    assert interfaces and all(local(address) for address in interfaces)
    assert not local("10.1.2.3") and not local("kafka.prod.example") and not local("")


def test_cli_up_status_down(tmp_path: Path) -> None:
    env = {
        "TRIMTAB_STACK__RUN_DIR": str(tmp_path),
        "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "TRIMTAB_REDIS__URL": f"redis://127.0.0.1:{free_port()}/0",
    }

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env=env, timeout=120)

    assert cli("status").returncode == 3  # down
    started = cli("up")
    assert started.returncode == 0, started.stderr
    assert "trimtab.feedback (4 partitions)" in started.stderr
    assert cli("status").returncode == 0
    assert "stopped: broker, redis" in cli("down").stderr
    assert cli("status").returncode == 3
