"""Cohorts: under load, calls wait briefly to go on together; alone, or with a few clients, they do not wait.

The unit tests drive `Cohorts` on a real event loop with calls that hold their place in flight until
released; the last test sends concurrent Submits from many clients through the real service.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from feedback.cohorts import PROBE_EVERY_S, Cohorts
from feedback.metrics import FeedbackMetrics
from tests.feedback.support import InProcessServer, events_for, response_ids, response_record, thumb
from tests.metrics import metric_points
from trimtab.config.feedback import CohortSettings

# Longer than the defaults, so that a loaded machine's late wake-ups (a millisecond's sleep taking several)
# do not split the cohorts these tests build.
SETTINGS = CohortSettings(quiet_ms=50, max_wait_ms=150, min_calls=4)
QUIET_S, MAX_WAIT_S = SETTINGS.quiet_ms / 1000, SETTINGS.max_wait_ms / 1000


class Calls:
    """Calls through one `Cohorts`, each recording when it arrived and when it went on, then staying in
    flight until `finish`."""

    def __init__(self, settings: CohortSettings = SETTINGS) -> None:
        self.reader = InMemoryMetricReader()
        meter = MeterProvider(metric_readers=[self.reader]).get_meter("test")
        self.cohorts = Cohorts(settings, FeedbackMetrics(meter))
        self.arrived: dict[str, float] = {}
        self.started: dict[str, float] = {}
        self.cohort_of: dict[str, int] = {}  # how many cohorts had been released when the call went on
        self._done = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str) -> asyncio.Task[None]:
        self._tasks[name] = asyncio.ensure_future(self._call(name))
        return self._tasks[name]

    async def _call(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        self.arrived[name] = loop.time()
        async with self.cohorts:
            self.started[name] = loop.time()
            self.cohort_of[name] = int(self.cohort_sizes()[0])
            await self._done.wait()

    async def finish(self) -> None:
        self._done.set()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    def cohort_sizes(self) -> tuple[float, float]:
        return _cohort_totals(self.reader)


async def _until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def _turns(count: int = 3) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def test_a_call_with_nothing_in_flight_goes_on_at_once() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.start("alone")
        await _turns()
        assert "alone" in calls.started and calls.cohorts.in_flight == 1
        assert calls.cohort_sizes() == (1, 1)  # counted as a cohort of one
        await calls.finish()
        assert calls.cohorts.in_flight == 0

    asyncio.run(scenario())


def test_calls_arriving_while_others_are_in_flight_go_on_together_once_arrivals_pause() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.start("first")
        await _turns()
        for index in range(5):  # a millisecond apart: under quiet_ms
            calls.start(f"late-{index}")
            await asyncio.sleep(0.001)
        assert not any(name.startswith("late") for name in calls.started)  # the cohort is still forming
        await asyncio.sleep(2 * QUIET_S)
        late = {name: at for name, at in calls.started.items() if name.startswith("late")}
        assert len(late) == 5 and len({calls.cohort_of[name] for name in late}) == 1  # one cohort
        assert min(late.values()) >= max(calls.arrived[name] for name in late) + QUIET_S - 1e-3
        assert calls.cohort_sizes() == (2, 6)  # "first" alone, then the five
        await calls.finish()

    asyncio.run(scenario())


def test_no_cohort_waits_longer_than_max_wait_while_calls_keep_arriving() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.start("first")
        await _turns()
        for index in range(400):  # a millisecond or more apart, 0.4 s or more: never quiet for quiet_ms
            calls.start(f"late-{index}")
            await asyncio.sleep(0.001)
        await asyncio.sleep(2 * QUIET_S)
        cohorts: dict[int, list[str]] = {}
        for name in calls.started:
            if name.startswith("late"):
                cohorts.setdefault(calls.cohort_of[name], []).append(name)
        assert sum(len(names) for names in cohorts.values()) == 400 and len(cohorts) >= 2
        for names in cohorts.values():  # without the bound, the first would wait for all 400 arrivals
            waited = min(calls.started[name] for name in names) - min(calls.arrived[name] for name in names)
            assert waited < 2 * MAX_WAIT_S, (waited, names)
        await calls.finish()

    asyncio.run(scenario())


def test_a_caller_cancelled_while_it_waits_leaves_the_others_waiting() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.start("first")
        await _turns()
        waiters = [calls.start(f"late-{index}") for index in range(3)]
        await _turns()
        waiters[1].cancel()
        await asyncio.sleep(2 * QUIET_S)
        assert sorted(calls.started) == ["first", "late-0", "late-2"]
        assert calls.cohorts.in_flight == 3
        await calls.finish()
        assert calls.cohorts.in_flight == 0

    asyncio.run(scenario())


def test_after_a_cohort_of_too_few_calls_only_a_probe_waits_until_more_gather() -> None:
    async def scenario() -> None:
        calls = Calls()
        calls.start("first")
        await _turns()
        calls.start("probe")  # in flight, no cohort started yet: it waits, and none joins it
        await _until(lambda: "probe" in calls.started)
        assert calls.cohort_sizes() == (2, 2)  # "first" alone, "probe" a cohort of one
        calls.start("then")  # the last cohort gathered 1 < min_calls and started under PROBE_EVERY_S ago
        await _turns()
        assert "then" in calls.started
        await asyncio.sleep(PROBE_EVERY_S)
        for index in range(SETTINGS.min_calls):  # the next probe gathers enough: waiting pays again
            calls.start(f"busy-{index}")
            await asyncio.sleep(0.001)
        await asyncio.sleep(2 * QUIET_S)
        assert calls.cohort_sizes() == (4, 3 + SETTINGS.min_calls)  # "then" alone, the probe gathering min_calls
        calls.start("after")
        await _turns()
        assert "after" not in calls.started  # it waits for its cohort now
        await asyncio.sleep(2 * QUIET_S)
        assert "after" in calls.started
        await calls.finish()

    asyncio.run(scenario())


def test_max_wait_0_turns_cohorts_off() -> None:
    async def scenario() -> None:
        calls = Calls(CohortSettings(max_wait_ms=0))
        for index in range(5):
            calls.start(f"call-{index}")
        await _turns()
        assert len(calls.started) == 5 and calls.cohort_sizes() == (5, 5)  # each alone
        await calls.finish()

    asyncio.run(scenario())


@pytest.mark.integration
def test_many_clients_submits_go_on_in_cohorts_each_accepted_once(feedback_server: InProcessServer) -> None:
    records = [feedback_server.put(response_record(user_id=f"cohort-user-{i}")) for i in range(96)]
    requests = [thumb(response_ids(r)[0], r.user_id, feedback_id=f"cohort-{uuid.uuid4()}") for r in records]
    before = _cohort_totals(feedback_server.metric_reader)
    with ThreadPoolExecutor(max_workers=32) as clients:
        responses = list(clients.map(feedback_server.submit, requests))
    after = _cohort_totals(feedback_server.metric_reader)
    cohorts, calls = after[0] - before[0], after[1] - before[1]
    assert all(not response.replayed for response in responses)
    events = events_for(feedback_server.config, {request.feedback_id for request in requests})
    assert sorted(e.event.feedback_id for e in events) == sorted(request.feedback_id for request in requests)
    assert calls > cohorts, "no cohort gathered two Submits while 32 clients submitted"


def _cohort_totals(reader: InMemoryMetricReader) -> tuple[float, float]:
    """(cohorts released, calls in them) so far."""
    count = metric_points(reader, "trimtab.feedback.cohort_calls")
    total = metric_points(reader, "trimtab.feedback.cohort_calls", "sum")
    return sum(count.values()), sum(total.values())
