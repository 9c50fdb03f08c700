"""`feedback.workers`: several processes on the same ports, each an instance of the exactly-once protocol.

The workers share the gRPC and HTTP ports and the kernel spreads client connections among them; a worker
killed mid-load is started again while the clients retry, and the topic still holds exactly one event per
acceptance; SIGTERM drains them all; a port another server holds fails the start.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from feedback.workers import worker_config
from tests.feedback.processes import (
    FeedbackProcess,
    Ledger,
    own_channel,
    process_config,
    put_records,
    retrying_client,
)
from tests.feedback.support import response_ids, thumb, topic_records
from trimtab.config import ConfigError, TrimtabConfig, load_config
from trimtab.v1 import events_pb2, feedback_pb2_grpc

CLIENTS = 16  # connections: all of them on one of two workers by chance is 2 in 65,536
SUBMISSIONS = 160
LOAD_LIMIT_S = 90


def test_workers_need_fixed_ports() -> None:
    with pytest.raises(ConfigError, match=r"workers \(2\) share the gRPC and HTTP ports"):
        load_config(environ={"TRIMTAB_FEEDBACK__WORKERS": "2", "TRIMTAB_FEEDBACK__GRPC_PORT": "0"})


def test_each_worker_serves_metrics_on_a_port_of_its_own() -> None:
    config = load_config(environ={"TRIMTAB_TELEMETRY__METRICS": "prometheus", "TRIMTAB_FEEDBACK__WORKERS": "3"})
    ports = [worker_config(config, index).telemetry.prometheus_port for index in range(3)]
    first = config.telemetry.prometheus_port
    assert ports == [first, first + 1, first + 2]


@pytest.fixture
def workers(stack: TrimtabConfig, tmp_path: Path) -> Iterator[tuple[FeedbackProcess, TrimtabConfig]]:
    config = process_config(stack, "test.workers", workers=2)
    process = FeedbackProcess(config, tmp_path / "feedback.log")
    process.start()
    yield process, config
    if process.process is not None and process.process.poll() is None:
        process.kill()  # its workers get SIGTERM from the kernel when it dies


@pytest.mark.integration
def test_workers_share_both_ports_and_the_kernel_spreads_connections(
    workers: tuple[FeedbackProcess, TrimtabConfig],
) -> None:
    process, config = workers
    served = process.workers()
    assert len(served) == 2
    for worker in served:
        listening = {c.laddr.port for c in worker.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert {config.feedback.grpc_port, config.feedback.http_port} <= listening

    record = put_records(config, 1)[0]
    channels = [own_channel(process.grpc_address) for _ in range(CLIENTS)]
    try:
        for channel in channels:  # one call each, so every connection is open and has reached a worker
            stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
            assert not stub.Submit(thumb(response_ids(record)[0], user_id=record.user_id), timeout=10).replayed
        for worker in served:
            clients = [
                c
                for c in worker.net_connections("tcp")
                if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == config.feedback.grpc_port
            ]
            assert clients, f"worker {worker.pid} got none of {CLIENTS} connections"
    finally:
        for channel in channels:
            channel.close()
    assert process.terminate() == 0  # SIGTERM: every worker drains, the parent exits cleanly
    assert not any(worker.is_running() for worker in served)


@pytest.mark.integration
def test_a_killed_worker_is_started_again_and_each_acceptance_is_on_the_topic_once(
    workers: tuple[FeedbackProcess, TrimtabConfig],
) -> None:
    process, config = workers
    records = put_records(config, SUBMISSIONS // 2)
    requests = [
        thumb(response_id, user_id=record.user_id, feedback_id=f"workers-{uuid.uuid4()}")
        for record in records
        for response_id in response_ids(record)
    ]
    seen = Ledger()
    stop = time.monotonic() + LOAD_LIMIT_S
    shares = [requests[i::CLIENTS] for i in range(CLIENTS)]
    pacing = {"interval_s": 0.02, "own_connection": True}
    threads = [
        threading.Thread(target=retrying_client, args=(process.grpc_address, share, seen, stop), kwargs=pacing)
        for share in shares
    ]
    for thread in threads:
        thread.start()
    while len(seen.accepted) < len(requests) / 3 and time.monotonic() < stop:
        time.sleep(0.01)
    before = process.workers()
    before[0].send_signal(signal.SIGKILL)
    replaced = _replacement(process, {worker.pid for worker in before})
    for thread in threads:
        thread.join(timeout=LOAD_LIMIT_S)
    assert process.terminate() == 0

    assert replaced is not None, "the parent did not start the killed worker again"
    assert len(seen.accepted) == len(requests), f"not all accepted within {LOAD_LIMIT_S} s"
    assert seen.failures, "the kill went unnoticed: the test did not exercise retries"
    records_on_topic = topic_records(config, config.kafka.topics.feedback.name)
    events = [events_pb2.FeedbackEvent.FromString(record.value) for record in records_on_topic]
    per_id = Counter(event.feedback_id for event in events)
    assert {fid: n for fid, n in per_id.items() if n > 1} == {}, "duplicated on the topic"
    assert set(per_id) == set(seen.accepted)  # events == acceptances: none lost, none unasked for


@pytest.mark.integration
def test_a_port_another_server_holds_fails_the_start(stack: TrimtabConfig, tmp_path: Path) -> None:
    config = process_config(stack, "test.workers", workers=2)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", config.feedback.http_port))
        holder.listen()
        process = FeedbackProcess(config, tmp_path / "feedback.log")
        with pytest.raises(AssertionError, match="exited early"):
            process.start()
    assert process.process is not None and process.process.wait(timeout=10) == 1
    assert f"cannot bind HTTP to 127.0.0.1:{config.feedback.http_port}" in (tmp_path / "feedback.log").read_text()


def _replacement(process: FeedbackProcess, before: set[int], timeout_s: float = 60) -> psutil.Process | None:
    """A worker that was not among `before`, once it listens."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        fresh = [worker for worker in process.workers() if worker.pid not in before]
        if fresh:
            return fresh[0]
        time.sleep(0.1)
    return None


@pytest.mark.integration
def test_workers_drain_when_their_parent_is_killed(workers: tuple[FeedbackProcess, TrimtabConfig]) -> None:
    process, _ = workers
    served = process.workers()
    process.kill()  # SIGKILL: the parent forwards nothing; the kernel sends each worker SIGTERM
    _, alive = psutil.wait_procs(served, timeout=30)
    assert alive == [], "orphaned workers kept serving"
