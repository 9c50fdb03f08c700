"""A real `python -m feedback` process and clients that retry like real ones: for the kill and chaos tests."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO, free_port
from tests.feedback.support import fresh_topic, response_record, service_config
from trimtab.config import TrimtabConfig
from trimtab.ports import listening_children
from trimtab.records import ResponseStore, redis_client
from trimtab.v1 import events_pb2, feedback_pb2, feedback_pb2_grpc


def process_config(stack: TrimtabConfig, topic_prefix: str, **feedback: Any) -> TrimtabConfig:
    """A config for `python -m feedback` as a real process: free ports, a topic of its own, and exactly-once
    timings short enough that a killed owner's submissions are recovered within a test (`feedback`: more)."""
    fields: dict[str, Any] = {"grpc_port": free_port(), "http_port": free_port(), "produce_timeout_s": 1.0}
    fields |= {"lease_s": 4.0, "in_progress_wait_s": 0.2}
    return service_config(stack, fresh_topic(topic_prefix), **(fields | feedback))


class FeedbackProcess:
    """`python -m feedback` as a real subprocess, configured through TRIMTAB_ variables only."""

    def __init__(self, config: TrimtabConfig, log: Path) -> None:
        settings = config.feedback
        self.grpc_address = f"127.0.0.1:{settings.grpc_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
        env |= {
            "PYTHONPATH": str(REPO),
            "TRIMTAB_KAFKA__BOOTSTRAP_SERVERS": config.kafka.bootstrap_servers,
            "TRIMTAB_KAFKA__TOPICS__FEEDBACK__NAME": config.kafka.topics.feedback.name,
            "TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS": str(config.kafka.topics.feedback.partitions),
            "TRIMTAB_REDIS__URL": config.redis.url,
            "TRIMTAB_REDIS__KEY_PREFIX": config.redis.key_prefix,
            "TRIMTAB_FEEDBACK__GRPC_PORT": str(settings.grpc_port),
            "TRIMTAB_FEEDBACK__HTTP_PORT": str(settings.http_port),
            "TRIMTAB_FEEDBACK__PRODUCE_TIMEOUT_S": str(settings.produce_timeout_s),
            "TRIMTAB_FEEDBACK__LEASE_S": str(settings.lease_s),
            "TRIMTAB_FEEDBACK__IN_PROGRESS_WAIT_S": str(settings.in_progress_wait_s),
            "TRIMTAB_FEEDBACK__USER_RATE": _flow(settings.user_rate.max_requests, settings.user_rate.window_s),
            "TRIMTAB_FEEDBACK__KEY_RATE": _flow(settings.key_rate.max_requests, settings.key_rate.window_s),
            "TRIMTAB_FEEDBACK__WORKERS": str(settings.workers),
        }
        self._workers = settings.workers
        self._env = env
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self._log.open("ab") as log:
            command = [sys.executable, "-m", "feedback"]
            self.process = subprocess.Popen(command, cwd=REPO, env=self._env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        with grpc.insecure_channel(self.grpc_address) as channel:
            probe = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"feedback exited early: {self._log.read_text()[-2000:]}"
                try:
                    if probe.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1 and self._all_serving():
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise AssertionError(f"feedback did not become SERVING: {self._log.read_text()[-2000:]}")

    def _all_serving(self) -> bool:
        return self._workers == 1 or f"{self._workers} workers serving" in self._log.read_text()

    def workers(self) -> list[psutil.Process]:
        """The worker processes listening on the gRPC port (none with one worker: the process serves)."""
        assert self.process is not None
        port = int(self.grpc_address.rsplit(":", 1)[1])
        return listening_children(self.process.pid, port)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=20)


@dataclass
class Ledger:
    """What the clients saw: every acceptance by feedback_id, and how many calls failed along the way."""

    accepted: dict[str, list[feedback_pb2.SubmitResponse]] = field(default_factory=dict)
    failures: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


def retrying_client(
    address: str,
    requests: list[feedback_pb2.SubmitRequest],
    seen: Ledger,
    stop: float,
    interval_s: float = 0.0,
    own_connection: bool = False,
) -> None:
    """Submit each request until it is accepted, retrying on any transport failure, like a real client;
    one submission due every `interval_s` (see `Schedule`); `own_connection`: not gRPC's connection shared
    by every channel to `address` in this process (workers spread connections, not calls)."""
    channel = own_channel(address) if own_connection else grpc.insecure_channel(address)
    stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
    schedule = Schedule(interval_s)
    for request in requests:
        schedule.wait()
        while time.monotonic() < stop:
            try:
                response = stub.Submit(request, timeout=2)
            except grpc.RpcError as error:
                _failed(error, seen)
                continue
            with seen.lock:
                seen.accepted.setdefault(request.feedback_id, []).append(response)
            break
    channel.close()


def retrying_batch_client(
    address: str,
    requests: list[feedback_pb2.SubmitRequest],
    seen: Ledger,
    stop: float,
    interval_s: float = 0.0,
    size: int = 8,
) -> None:
    """SubmitBatch of up to `size` items until each is accepted; a failed call or a refused item is retried;
    one call that gets an answer due every `interval_s` (see `Schedule`)."""
    channel = grpc.insecure_channel(address)
    stub = feedback_pb2_grpc.FeedbackServiceStub(channel)
    pending = list(requests)
    schedule = Schedule(interval_s)
    answered = True
    while pending and time.monotonic() < stop:
        if answered:
            schedule.wait()
        answered = False
        items = pending[:size]
        try:
            response = stub.SubmitBatch(feedback_pb2.SubmitBatchRequest(items=items), timeout=2)
        except grpc.RpcError as error:
            _failed(error, seen)
            continue
        answered = True
        for request, result in zip(items, response.results, strict=True):
            if result.HasField("refused"):
                assert result.refused.status == "UNAVAILABLE", result.refused.message
                with seen.lock:
                    seen.failures["item UNAVAILABLE"] += 1
                continue
            with seen.lock:
                seen.accepted.setdefault(request.feedback_id, []).append(result.accepted)
            pending.remove(request)
    channel.close()


class Schedule:
    """Calls due every `interval_s` from the first, as users arrive on a clock: a client that fell behind (slow
    calls, an outage) catches up without pausing. A pause after each call instead would drift later with
    every slow call, and a slow machine would leave a soak's load unsent at its deadline."""

    def __init__(self, interval_s: float) -> None:
        self._interval_s = interval_s
        self._due = time.monotonic()

    def wait(self) -> None:
        """Until the next call is due (at once if it is overdue)."""
        time.sleep(max(0.0, self._due - time.monotonic()))
        self._due += self._interval_s


def own_channel(address: str) -> grpc.Channel:
    """A channel on a connection of its own, as a separate client's (gRPC shares one between channels of the
    same target and options otherwise)."""
    return grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


def _failed(error: grpc.RpcError, seen: Ledger) -> None:
    """Count a call that failed as a killed service or an absent broker make calls fail (any other failure
    stops the client), then pause before the retry."""
    code = error.code()
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error.details()
    with seen.lock:
        seen.failures[code.name] += 1
    time.sleep(0.1)


def _flow(max_requests: int, window_s: float) -> str:
    return f"{{max_requests: {max_requests}, window_s: {window_s}}}"


def put_records(config: TrimtabConfig, count: int, ttl_s: int = 600) -> list[events_pb2.ResponseLogged]:
    async def put() -> list[events_pb2.ResponseLogged]:
        client = redis_client(config.redis)
        store = ResponseStore(client, config.redis.key_prefix)
        records = [response_record(user_id=f"user-{i % 40}") for i in range(count)]
        for record in records:
            await store.put(record, ttl_s=ttl_s)
        await client.aclose()
        return records

    return asyncio.run(put())
