"""The judged responses' records, waited for briefly when a client has outrun serving's response log.

Serving mints a response id ("resp_" + a ULID, which carries the time) when Generate admits the
request, and writes the request's record to Redis just after the reply, off the reply path and in
batches (`serving.recorder`). A client that submits feedback the moment the answer arrives can get
here before the record. So a missing record is final (NOT_FOUND) only when it cannot be on its way:

    every missing id is serving's, minted under `window_s` ago    poll Redis until they land, for at most
      (and at most `clock_skew_s` in the future)                  `wait_s` and never past the window;
                                                                  still missing: UNAVAILABLE, retry-after
    any missing id that is not serving's, older, or from the      the caller's validation says NOT_FOUND,
      future                                                      at once, as before

Polls back off from 10 ms to 200 ms (a record normally lands within milliseconds). Each is one MGET
sent with the service's other commands (`feedback.roundtrips`) and the wait between them is an asyncio
sleep, so a waiting call holds no Redis connection between polls and blocks no other call. At most
`max_waiting` calls wait at once; beyond that a call with a fresh id gets UNAVAILABLE at once (made-up
fresh ids cost polls).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Mapping, Sequence

from opentelemetry import trace

from feedback.errors import record_pending
from feedback.metrics import FeedbackMetrics
from feedback.roundtrips import RoundTrips
from trimtab.config.feedback import FreshRecords
from trimtab.ids import RESPONSE_ID_PREFIX, minted_at_ms
from trimtab.records import ResponseStore
from trimtab.v1 import events_pb2

_FIRST_POLL_S = 0.01
_MAX_POLL_S = 0.2

Records = dict[str, events_pb2.ResponseLogged | None]


def fresh_wait_s(missing: Collection[str], now_s: float, settings: FreshRecords) -> float | None:
    """How long a call may wait for the records of the `missing` response ids at `now_s` (epoch seconds):
    at most `wait_s` and never past any id's window; None unless every one may still be on its way."""
    budget = settings.wait_s
    for response_id in missing:
        minted_ms = minted_at_ms(response_id, RESPONSE_ID_PREFIX)
        if minted_ms is None:
            return None
        age_s = now_s - minted_ms / 1000
        if not -settings.clock_skew_s <= age_s < settings.window_s:
            return None
        budget = min(budget, settings.window_s - age_s)
    return budget


class RecordReader:
    """Reads the records a submission judges from the response log, waiting for fresh ones."""

    def __init__(
        self, store: ResponseStore, redis: RoundTrips, settings: FreshRecords, metrics: FeedbackMetrics
    ) -> None:
        self._store = store
        self._redis = redis
        self._settings = settings
        self._metrics = metrics
        self._waiting = 0

    def record_keys(self, judged: Mapping[str, str]) -> list[str]:
        """The Redis keys of the judged responses' records, in `judged`'s order (the ledger's look reads them)."""
        return [self._store.key(response_id) for response_id in judged.values()]

    async def read(self, judged: Mapping[str, str], stored: Sequence[bytes | None]) -> Records:
        """The record of each judged response ({field: response_id}) by response id, None where it is
        unknown or expired; UNAVAILABLE (FeedbackError) where a fresh one has not landed in time.
        `stored`: what the judged records' keys held a moment ago, in `judged`'s order."""
        decoded = zip(judged.values(), stored, strict=True)
        records = {response_id: self._store.decode(value) for response_id, value in decoded}
        missing = {field: response_id for field, response_id in judged.items() if records[response_id] is None}
        budget_s = fresh_wait_s(missing.values(), time.time(), self._settings) if missing else None
        if budget_s is None:
            return records
        return records | await self._wait(missing, budget_s)

    async def _wait(self, missing: dict[str, str], budget_s: float) -> Records:
        """The missing records, polled for at most `budget_s`; UNAVAILABLE naming one still missing."""
        if self._waiting >= self._settings.max_waiting:
            self._ended("too_many")
            raise record_pending(*next(iter(missing.items())))
        self._waiting += 1
        started = time.monotonic()
        try:
            found = await self._poll(list(missing.values()), started + budget_s)
        finally:
            self._waiting -= 1
        for field, response_id in missing.items():
            if found.get(response_id) is None:
                self._ended("timed_out")
                raise record_pending(field, response_id)
        self._ended("found", time.monotonic() - started)
        return found

    def _ended(self, outcome: str, seconds: float | None = None) -> None:
        self._metrics.record_wait(outcome, seconds)
        trace.get_current_span().set_attribute("trimtab.feedback.record_wait", outcome)  # on feedback.Submit

    async def _poll(self, response_ids: list[str], until: float) -> Records:
        found: Records = {}
        pause_s = _FIRST_POLL_S
        while len(found) < len(response_ids) and (left_s := until - time.monotonic()) > 0:
            await asyncio.sleep(min(pause_s, left_s))
            pause_s = min(2 * pause_s, _MAX_POLL_S)
            polled = await self._get([i for i in response_ids if i not in found])
            found |= {i: record for i, record in polled.items() if record is not None}
        return found

    async def _get(self, response_ids: list[str]) -> Records:
        values = await self._redis.execute("MGET", *(self._store.key(i) for i in response_ids))
        return {i: self._store.decode(value) for i, value in zip(response_ids, values, strict=True)}
