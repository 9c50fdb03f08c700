"""What every part of one run of the online learner shares: values fixed when it starts (`OnlineRun`), and
the one flag a signal may set (`StopFlag`). What must survive a restart is not here: it is the
checkpointed `LearnerMemory`."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import torch
from rich.console import Console
from transformers import PreTrainedTokenizerBase

from learner.distributed import DistContext
from learner.online.memory import LearnerMemory
from learner.online.telemetry import LearnerTelemetry
from learner.online.version_events import VersionEvents
from trimtab.config import TrimtabConfig
from trimtab.config.online import OnlineConfig
from trimtab.suite import EvaluationSuite


@dataclass
class StopFlag:
    """Set by SIGTERM or SIGINT: the learner finishes the round in hand, checkpoints it and exits (a stop
    while the round's candidate is gated abandons the round instead: it is redone on restart)."""

    requested: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._request)
        signal.signal(signal.SIGINT, self._request)

    def is_set(self) -> bool:
        return self.requested

    def _request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True


class Meanwhile:
    """What a long phase calls now and then (each optimiser step, each RL step, the wait on the gates): the
    loop sets it to let the canary judge catch up on the feedback that arrived (`FeedbackSource.catch_up`),
    so a canary decided during the phase is decided then, not when the phase ends; the next canary, which is
    how a round's weights first reach users, starts sooner. At most once every `every_s`: each catch-up
    polls the stream and reads the serving pointers from Redis (a few milliseconds)."""

    def __init__(self, every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s, self._clock = every_s, clock
        self._work: Callable[[], None] = lambda: None
        self._last = clock()

    def set(self, work: Callable[[], None]) -> None:
        self._work = work

    def __call__(self) -> None:
        now = self._clock()
        if now - self._last >= self.every_s:
            self._last = now
            self._work()


@dataclass(frozen=True)
class OnlineRun:
    """One run's settings, collaborators and loaded inputs, made once at its start and passed to every part."""

    config: TrimtabConfig
    model_dir: Path  # where the learner starts when it has no checkpoint; the gates' reference model
    console: Console
    context: DistContext
    telemetry: LearnerTelemetry
    suite: EvaluationSuite
    tokenizer: PreTrainedTokenizerBase
    pad_id: int
    dtype: torch.dtype  # the weights' (learner.dtype)
    stop: StopFlag
    events: VersionEvents | None  # the versions topic: rank 0 only
    meanwhile: Meanwhile

    @property
    def online(self) -> OnlineConfig:
        return self.config.learner.online

    def finished(self, memory: LearnerMemory) -> bool:
        """After a round: whether to stop (learner.online.max_rounds reached, or a signal)."""
        return bool(self.online.max_rounds and memory.rounds >= self.online.max_rounds) or self.stop.requested

    def on_step(self, step: int, examples: int, metrics: dict[str, float]) -> None:
        """Rank 0 logs a line every learner.log_every_steps optimiser steps of a round; `meanwhile` runs."""
        if self.context.is_main and step % self.config.learner.log_every_steps == 0:
            self.console.print(f"  step {step}: loss {metrics.get('loss', float('nan')):.4f}")
        self.meanwhile()

    def waiting(self) -> bool:
        """Polled while rank 0 waits on a worker (the gates): `meanwhile` runs; whether to stop waiting."""
        self.meanwhile()
        return self.stop.is_set()
