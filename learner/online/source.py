"""Where each round's new items come from: rank 0 reads the feedback topic, admitting every event to the
memory's pending items (`LearnerMemory.admit`), until a round is due (`learner.online.round`); the items
then reach every rank by broadcast, so all ranks train on the same data. The canary judge, on rank 0,
watches the same events and decides between polls, and while a round runs too (`catch_up`: between its
phases, and about once a second inside the long ones through `OnlineRun.meanwhile`): a canary's thumbs
keep arriving while a round trains, and its decision (and the next canary, which is how new weights first
reach users) should not wait for the round, or a phase of it, to end.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping

from learner.distributed import broadcast
from learner.online.canary import CanaryJudge
from learner.online.items import Item, ItemFactory
from learner.online.memory import LearnerMemory
from learner.online.raters import Raters
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
        self._raters = (
            Raters.for_suite(run.suite, run.online.raters, memory.raters, say=self._say)
            if run.context.is_main
            else None
        )

    def rounds(self) -> Iterator[list[Item]]:
        """Each round's new items, on every rank, until rank 0 stops reading (stopped, or idle and drained)."""
        while (new := broadcast(None if self._stream is None else self._read_until_due(self._stream))) is not None:
            yield new

    def catch_up(self) -> None:
        """Rank 0, while a round runs: read what has arrived and let the canary judge decide on it. The events
        read wait in the memory's pending items for the next round (and travel in this round's checkpoint),
        like anything read while waiting; other ranks do nothing."""
        if self._stream is not None and self._judge is not None:
            self._poll(self._stream, timeout_s=0.0)
            self._judge.decide()

    def commit(self, positions: Mapping[int, int]) -> None:
        """Mirror `positions`, once durable in a checkpoint, to the consumer group."""
        if self._stream is not None:
            self._stream.commit(positions)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()

    def _read_until_due(self, stream: FeedbackStream) -> list[Item] | None:
        """Rank 0: poll until a round is due; its new items (None: stop)."""
        memory, judge = self._memory, self._judge
        round_config = self._run.online.round
        started = last_event = time.monotonic()
        while not self._run.stop.requested:
            if self._poll(stream, timeout_s=0.5):
                last_event = time.monotonic()
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
                return self._weighted(memory.pending.take(round_config.max_examples, round_config.max_user_share))
            idle = self._run.online.stop_when_idle_s
            if idle and time.monotonic() - last_event >= idle:
                # Idle: train what is left (if anything) before stopping, so nothing consumed waits forever.
                return self._weighted(memory.pending.take(round_config.max_examples, 1.0)) or None
        return None

    def _weighted(self, items: list[Item]) -> list[Item]:
        """A round's items at their users' rater weights now (unchanged without a judge)."""
        if self._raters is None or not items:
            return items
        weights = self._raters.weights()
        self._run.telemetry.raters(weights)
        if low := sum(w < 0.5 for w in weights):
            self._say(f"rater agreement: {low} of {len(weights)} users weigh under 0.5")
        return self._raters.weighted(items)

    def _say(self, line: str) -> None:
        self._run.console.print(f"online learner: {line}")

    def _poll(self, stream: FeedbackStream, timeout_s: float) -> bool:
        """One poll's events admitted to the memory (and shown to the judge); whether any arrived."""
        memory, telemetry = self._memory, self._run.telemetry
        consumed = stream.poll(timeout_s=timeout_s, max_records=500)
        for one in consumed:
            telemetry.consumed(one.event.label.WhichOneof("kind") or "none", one.context)
            rater_weight = 1.0
            if self._raters is not None:
                self._raters.observe(one.event)
                rater_weight = self._raters.weight(one.event.user_id)
            if self._judge is not None:
                self._judge.observe(one.event, rater_weight)
            memory.admit(one.event, self._factory)
        memory.positions = dict(stream.positions)
        for partition in stream.lost:  # what the next version consumes of it starts at the new log's start
            memory.range_start[partition] = 0
        stream.lost.clear()
        skipped = {"undecodable": stream.undecodable, "read_before_broker_loss": stream.read_before_loss}
        telemetry.waiting(len(memory.pending.items), memory.skipped | skipped)
        return bool(consumed)
