"""The response log's sinks (no services needed): records that queue up while a write is in progress, or
within a sink's linger, are written together as one batch, a failed batch is retried whole, and a full
buffer drops and counts."""

from __future__ import annotations

import asyncio

from serving.recorder import Sink


def test_records_queued_during_a_write_land_as_one_batch_and_a_failed_batch_is_retried() -> None:
    async def run() -> tuple[list[list[int]], int, int]:
        batches: list[list[int]] = []
        release = asyncio.Event()
        failures = 1

        async def write(batch: list[int]) -> None:
            nonlocal failures
            if batch == [0]:
                await release.wait()  # the first record's write is in progress while more arrive
            elif failures:
                failures -= 1
                raise ConnectionError("sink down")
            batches.append(list(batch))

        sink: Sink[int] = Sink("test", write, capacity=10, retry_s=0.01)
        sink.start()
        sink.offer(0)
        await asyncio.sleep(0.01)
        for item in range(1, 5):
            sink.offer(item)
        release.set()
        await sink.drain(timeout_s=5.0)
        return batches, sink.stats.written, sink.stats.failures

    batches, written, failures = asyncio.run(run())
    assert batches == [[0], [1, 2, 3, 4]]  # the retried batch is the same four records
    assert (written, failures) == (5, 1)


def test_a_full_buffer_drops_and_counts_without_blocking() -> None:
    async def run() -> tuple[list[bool], int, list[str]]:
        dropped: list[str] = []
        sink: Sink[int] = Sink(
            "test", lambda batch: asyncio.sleep(0), capacity=2, retry_s=0.01, on_drop=lambda: dropped.append("x")
        )
        offered = [sink.offer(item) for item in range(3)]  # the writer is not started: nothing drains
        return offered, sink.stats.dropped, dropped

    offered, count, dropped = asyncio.run(run())
    assert offered == [True, True, False]
    assert count == 1 and dropped == ["x"]


def test_a_sink_with_a_linger_writes_what_arrives_within_it_as_one_batch() -> None:
    async def run(linger_s: float) -> list[list[int]]:
        batches: list[list[int]] = []

        async def write(batch: list[int]) -> None:
            batches.append(list(batch))

        sink: Sink[int] = Sink("test", write, capacity=10, retry_s=0.01, linger_s=linger_s)
        sink.start()
        for item in range(4):  # 10 ms apart: within a linger of 0.2 s
            sink.offer(item)
            await asyncio.sleep(0.01)
        await sink.drain(timeout_s=5.0)
        return batches

    assert asyncio.run(run(0.2)) == [[0, 1, 2, 3]]
    assert len(asyncio.run(run(0.0))) == 4  # without one, each record that finds the sink idle goes alone
