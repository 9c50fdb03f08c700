"""Progress of a training run: a live bar on a terminal, periodic lines in logs, a JSONL metrics file."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Call `step()` after every optimiser step; metrics go to the display and to `metrics_path`.

    A resumed run passes the steps and examples done before it (`start_step`, `examples_done`): the
    log's counts continue from there, while rates and ETA measure this process only."""

    def __init__(
        self,
        description: str,
        total_steps: int,
        metrics_path: Path | None,
        log_every: int,
        console: Console,
        start_step: int = 0,
        examples_done: int = 0,
    ) -> None:
        self.total_steps = total_steps
        self.log_every = log_every
        self.console = console
        self.start_step = start_step
        self.examples_done = examples_done
        self.examples = examples_done
        self.started = time.monotonic()
        self._metrics_file: TextIO | None = metrics_path.open("a") if metrics_path else None
        self._bar: Progress | None = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=console,
            )
            self._task = self._bar.add_task(description, total=total_steps, completed=start_step, stats="")
        else:
            console.print(f"{description}: {total_steps} steps")

    def __enter__(self) -> TrainProgress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        if self._bar is not None:
            self._bar.stop()
        if self._metrics_file is not None:
            self._metrics_file.close()

    @property
    def examples_per_s(self) -> float:
        return (self.examples - self.examples_done) / max(time.monotonic() - self.started, 1e-9)

    def step(self, step: int, batch_examples: int, metrics: dict[str, float]) -> None:
        self.examples += batch_examples
        record = {"step": step, "examples": self.examples, "examples_per_s": round(self.examples_per_s, 2), **metrics}
        if self._metrics_file is not None:
            self._metrics_file.write(json.dumps(record) + "\n")
            self._metrics_file.flush()  # complete lines on disk: plotted live, copied into checkpoints
        stats = f"loss {metrics.get('loss', float('nan')):.4f}  {self.examples_per_s:.0f} ex/s"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, stats=stats)
        elif step % self.log_every == 0 or step == self.total_steps:
            elapsed = time.monotonic() - self.started
            eta = elapsed / (step - self.start_step) * (self.total_steps - step)
            self.console.print(f"  step {step}/{self.total_steps}  {stats}  eta {eta:.0f}s")
