"""Calls that arrive while others are in flight go on together, as a cohort.

The service's steps are cheap per call only when calls take them together: the Redis commands issued
in one turn of the event loop share a write and a read (`feedback.roundtrips`), and events sent
together share a produce request, whose round on kafka-python's network thread costs about as much CPU
as a submission's own steps. A SubmitBatch's items, or calls started at the same moment, move in step.
Calls from many clients do not: each arrives on a turn of its own, so each step of each call became a
Redis write, a read and a produce request of its own. Gathered into cohorts, 32 clients' Submits cost
half the CPU each and were answered sooner (docs/measurements.md#feedback).

Waiting pays only when others arrive meanwhile, so a call waits for its cohort when

    a cohort is forming                          it joins it
    calls are in flight and the last cohort      it starts a new one
      gathered at least `min_calls`
    calls are in flight, and no cohort has       it starts one, to see whether cohorts gather now
      started for PROBE_EVERY_S                    (load changes)

and otherwise goes on at once: alone, or with a few clients, a call does not wait (but for the rare
probe). A cohort goes on `quiet_ms` after its latest arrival or `max_wait_ms` after its first,
whichever comes first. It is only a start together: each call keeps its own path, limits and answer,
and a caller cancelled while it waits leaves the others waiting (each waits on a future of its own).
"""

from __future__ import annotations

import asyncio
from types import TracebackType

from feedback.metrics import FeedbackMetrics
from trimtab.config.feedback import CohortSettings

PROBE_EVERY_S = 0.1


class Cohorts:
    """`async with cohorts:` around a call's work: it starts with its cohort and counts as in flight."""

    def __init__(self, settings: CohortSettings, metrics: FeedbackMetrics) -> None:
        self._quiet_s = settings.quiet_ms / 1000
        self._max_wait_s = settings.max_wait_ms / 1000
        self._min_calls = settings.min_calls
        self._metrics = metrics
        self.in_flight = 0
        self._waiting: list[asyncio.Future[None]] = []
        self._first_at = float("-inf")  # the latest cohort's first arrival
        self._last_at = 0.0
        self._last_size = 0

    async def __aenter__(self) -> None:
        if self._waiting or self._worth_waiting():
            await self._join()
        else:
            self._metrics.went_on(1)  # alone: how many calls go on unaccompanied is what shows load
        self.in_flight += 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1

    def _worth_waiting(self) -> bool:
        if self._max_wait_s <= 0 or not self.in_flight:
            return False
        if self._last_size >= self._min_calls:
            return True
        return asyncio.get_running_loop().time() - self._first_at >= PROBE_EVERY_S

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._waiting:
            self._first_at = now
            loop.call_at(now + min(self._quiet_s, self._max_wait_s), self._release)
        self._last_at = now
        waiter = loop.create_future()
        self._waiting.append(waiter)
        await waiter

    def _release(self) -> None:
        """The cohort goes on once it has been quiet long enough or has waited the most it may."""
        loop = asyncio.get_running_loop()
        due = min(self._first_at + self._max_wait_s, self._last_at + self._quiet_s)
        if loop.time() < due:
            loop.call_at(due, self._release)
            return
        cohort, self._waiting = self._waiting, []
        self._last_size = len(cohort)
        for waiter in cohort:
            if not waiter.done():  # done: its caller was cancelled
                waiter.set_result(None)
        self._metrics.went_on(len(cohort), waited_s=loop.time() - self._first_at)
