"""Where each round's new items come from: rank 0 reads the feedback topic, admitting every event to the
memory's pending items (`LearnerMemory.admit`), until a round is due (`learner.online.round`); the items
then reach every rank by broadcast, so all ranks train on the same data. The canary judge, on rank 0,
watches the same events and decides between polls.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from learner.distributed import broadcast
from learner.online.canary import CanaryJudge
from learner.online.items import Item, ItemFactory
from learner.online.memory import LearnerMemory
from learner.online.run import OnlineRun
from learner.online.stream import FeedbackStream


class FeedbackSource:
    """The rounds' new items from `memory`'s stream positions on; it writes the positions, the pending items
    and the skip counts into `memory`, which the learner checkpoints."""

    def __init__(self, run: OnlineRun, memory: LearnerMemory, judge: CanaryJudge | None) -> None:
        self._run, self._memory, self._judge = run, memory, judge
        # The factory counts into the memory's own dict, so the counts travel with every checkpoint.
        self._factory = ItemFactory(run.online.mix, run.config.guardrails.feedback_filter, memory.skipped)
        self._stream = (
            FeedbackStream(run.config.kafka, run.online.group_id, memory.positions, memory.fences)
            if run.context.is_main
            else None
        )

    def rounds(self) -> Iterator[list[Item]]:
        """Each round's new items, on every rank, until rank 0 stops reading (stopped, or idle and drained)."""
        while (new := broadcast(None if self._stream is None else self._read_until_due(self._stream))) is not None:
            yield new

    def commit(self, positions: Mapping[int, int]) -> None:
        """Mirror `positions`, once durable in a checkpoint, to the consumer group."""
        if self._stream is not None:
            self._stream.commit(positions)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _read_until_due(self, stream: FeedbackStream) -> list[Item] | None:
        """Rank 0: poll until a round is due; its new items (None: stop)."""
        memory, judge, telemetry = self._memory, self._judge, self._run.telemetry
        round_config = self._run.online.round
        started = last_event = time.monotonic()
        while not self._run.stop.requested:
            for consumed in stream.poll(timeout_s=0.5, max_records=500):
                last_event = time.monotonic()
                telemetry.consumed(consumed.event.label.WhichOneof("kind") or "none", consumed.context)
                if judge is not None:
                    judge.observe(consumed.event)
                memory.admit(consumed.event, self._factory)
            memory.positions = dict(stream.positions)
            for partition in stream.lost:  # what the next version consumes of it starts at the new log's start
                memory.range_start[partition] = 0
            stream.lost.clear()
            skipped = {"undecodable": stream.undecodable, "read_before_broker_loss": stream.read_before_loss}
            telemetry.waiting(len(memory.pending.items), memory.skipped | skipped)
            if judge is not None:
                # Before the round check: feedback that arrived while the last round trained makes the next
                # one due at once, and a judge consulted only while waiting would then never decide.
                judge.decide()
            waited = time.monotonic() - started
            ready = len(memory.pending.items)
            if ready >= round_config.examples or (
                waited >= round_config.seconds and ready >= round_config.min_examples
            ):
                # Everything that waits (up to max_examples): feedback arrives while a round trains and
                # gates, and taking only `examples` would let the backlog, and so the staleness, grow.
                return memory.pending.take(round_config.max_examples, round_config.max_user_share)
            idle = self._run.online.stop_when_idle_s
            if idle and time.monotonic() - last_event >= idle:
                # Idle: train what is left (if anything) before stopping, so nothing consumed waits forever.
                return memory.pending.take(round_config.max_examples, 1.0) or None
        return None
