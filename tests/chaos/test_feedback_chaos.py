"""Chaos on the feedback path: `python -m feedback` under load from retrying clients (one at a time and in
batches) is SIGKILLed at random moments, its broker is killed and restarts empty, its Redis is killed
and restarts with what its append-only file kept, again and again. Counted by feedback_id at the end:
every accepted feedback is on the topic exactly once, as the event its acceptances named, and nothing
else is.

`make test` runs a short round (two kills of the service, one of the broker and one of Redis, 240
submissions). `make chaos` runs the soak: `TRIMTAB_CHAOS_S` seconds (default 1200) of load, chaos
events in the first half (service, Redis, service, broker, in turn, 15-45 s apart), and the service's
memory sampled every 10 s in the calm second half: its RSS
slope is reported (and written to .trimtab/test-artifacts/chaos-feedback.json) and must stay under
2 MiB a minute.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.chaos.support import ARTIFACTS, MAX_RSS_SLOPE_MIB_PER_MIN, assert_exactly_once, crash, slope
from tests.conftest import kill_local, stack_of_its_own
from tests.feedback.processes import (
    FeedbackProcess,
    Ledger,
    process_config,
    put_records,
    retrying_batch_client,
    retrying_client,
)
from tests.feedback.support import response_ids, thumb
from trimtab.app.stack import down, up
from trimtab.config import TrimtabConfig
from trimtab.v1 import feedback_pb2

pytestmark = pytest.mark.integration


@pytest.fixture
def chaos_stack(stack: TrimtabConfig, tmp_path: Path) -> Iterator[tuple[FeedbackProcess, TrimtabConfig]]:
    """A feedback process on a broker and a Redis of its own (which the test kills and restarts)."""
    own = stack_of_its_own(stack, tmp_path / "stack")
    up(own)
    config = process_config(own, "test.chaos", user_rate={"max_requests": 100_000, "window_s": 60})
    process = FeedbackProcess(config, tmp_path / "feedback.log")
    process.start()
    yield process, config
    if process.process is not None and process.process.poll() is None:
        process.kill()
    down(own)


def submissions(config: TrimtabConfig, count: int, ttl_s: int = 600) -> list[feedback_pb2.SubmitRequest]:
    """`count` thumbs on response records that live `ttl_s` (longer than the run that judges them)."""
    records = put_records(config, (count + 1) // 2, ttl_s)
    requests = [
        thumb(response_id, user_id=record.user_id, up=index % 2 == 0, feedback_id=f"chaos-{uuid.uuid4()}")
        for record in records
        for index, response_id in enumerate(response_ids(record))
    ]
    return requests[:count]


def load(
    process: FeedbackProcess,
    requests: list[feedback_pb2.SubmitRequest],
    seen: Ledger,
    stop: float,
    rate_per_s: float | None = None,
) -> list[threading.Thread]:
    """Eight retrying clients, half submitting one at a time, half in batches of 8, together offering about
    `rate_per_s` submissions a second (None: as fast as they are answered); started, not joined."""
    shares = [requests[i::8] for i in range(8)]
    interval_s = 0.0 if rate_per_s is None else 8 / rate_per_s  # each client's share of the rate
    threads = [
        threading.Thread(
            target=retrying_client if i % 2 else retrying_batch_client,
            args=(process.grpc_address, share, seen, stop),
            kwargs={"interval_s": interval_s if i % 2 else 8 * interval_s},
            daemon=True,
        )
        for i, share in enumerate(shares)
    ]
    for thread in threads:
        thread.start()
    return threads


def test_kills_of_the_service_its_broker_and_its_redis_under_load_leave_each_acceptance_on_the_topic_once(
    chaos_stack: tuple[FeedbackProcess, TrimtabConfig],
) -> None:
    process, config = chaos_stack
    requests = submissions(config, 240)
    seen = Ledger()
    stop = time.monotonic() + 120
    threads = load(process, requests, seen, stop)
    chaos = [("kill", 0.2), ("broker", 0.4), ("redis", 0.6), ("kill", 0.8)]
    for event, fraction in chaos:  # each with calls in flight
        while len(seen.accepted) < fraction * len(requests) and time.monotonic() < stop:
            time.sleep(0.01)
        if event == "kill":
            process.kill()
            time.sleep(0.3)
            process.start()
        else:
            crash(config, event)
    for thread in threads:
        thread.join(timeout=120)
    assert process.terminate() == 0
    assert seen.failures, "the chaos went unnoticed: the test did not exercise retries"
    assert_exactly_once(config, seen, len(requests))


def test_a_redis_that_comes_back_empty_is_found_and_the_ledger_rebuilt_from_the_topic(
    chaos_stack: tuple[FeedbackProcess, TrimtabConfig], tmp_path: Path
) -> None:
    """Redis killed and started without its append-only file (as one without persistence would come back):
    every retry of an accepted feedback is answered as its first acceptance once the service has rebuilt
    the ledger from the topic, new feedback goes on being accepted, and nothing is on the topic twice."""
    process, config = chaos_stack
    before, seen = submissions(config, 40), Ledger()
    retrying_client(process.grpc_address, before, seen, stop=time.monotonic() + 60)
    assert len(seen.accepted) == 40 and not seen.failures
    kill_local(config, "redis")
    for kept in config.stack.run_dir.glob("appendonly*"):  # what a Redis without persistence keeps: nothing
        shutil.rmtree(kept) if kept.is_dir() else kept.unlink()
    up(config)

    retries = Ledger()
    retrying_client(process.grpc_address, before, retries, stop=time.monotonic() + 90)
    assert retries.failures["UNAVAILABLE"] > 0  # while it rebuilt
    for feedback_id, [first] in seen.accepted.items():
        again = retries.accepted[feedback_id][-1]
        assert again.replayed and (again.event_id, again.partition, again.offset) == (
            first.event_id, first.partition, first.offset
        )  # fmt: skip
    after = submissions(config, 10)  # on records serving wrote after the loss: accepted as ever
    retrying_client(process.grpc_address, after, seen, stop=time.monotonic() + 60)
    assert process.terminate() == 0
    assert_exactly_once(config, seen, 50)
    log = (tmp_path / "feedback.log").read_text()
    assert "Redis lost the feedback ledger" in log and "40 entries restored, 0 already there" in log, log[-3000:]


@pytest.mark.chaos
def test_the_feedback_path_soaks_under_chaos_with_flat_memory(
    chaos_stack: tuple[FeedbackProcess, TrimtabConfig],
) -> None:
    process, config = chaos_stack
    duration_s = float(os.environ.get("TRIMTAB_CHAOS_S", "1200"))
    rate = 40  # submissions a second, offered
    requests = submissions(config, int(rate * duration_s), ttl_s=int(duration_s) + 900)
    seen = Ledger()
    started = time.monotonic()
    stop = started + duration_s + 120
    threads = load(process, requests, seen, stop, rate_per_s=rate)
    rng = random.Random(7)
    kinds = itertools.cycle(["kill", "redis", "kill", "broker"])  # each kind within any four events
    events: Counter[str] = Counter()
    samples: list[tuple[float, float]] = []
    while any(thread.is_alive() for thread in threads) and time.monotonic() < stop:
        elapsed = time.monotonic() - started
        if elapsed < duration_s / 2:
            time.sleep(rng.uniform(15, 45))
            event = next(kinds)
            if event == "kill":
                process.kill()
                time.sleep(rng.uniform(0.1, 2.0))
                process.start()
            else:
                crash(config, event)
            events[event] += 1
        else:
            assert process.process is not None
            samples.append((elapsed / 60, psutil.Process(process.process.pid).memory_info().rss / 2**20))
            time.sleep(10)
    for thread in threads:
        thread.join(timeout=120)
    assert process.terminate() == 0
    assert_exactly_once(config, seen, len(requests))
    rss_slope = slope(samples)
    report = {"seconds": duration_s, "submissions": len(requests), "chaos": dict(events),
              "failed_calls": dict(seen.failures), "rss_mib": samples, "rss_slope_mib_per_min": rss_slope}  # fmt: skip
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "chaos-feedback.json").write_text(json.dumps(report, indent=2))
    print(f"feedback chaos soak: {json.dumps({k: v for k, v in report.items() if k != 'rss_mib'})}")
    assert len(samples) >= 5 and rss_slope < MAX_RSS_SLOPE_MIB_PER_MIN, report
