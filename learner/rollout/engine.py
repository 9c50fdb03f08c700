"""The trainer's handle on its rollout engine: a vLLM engine that lives as long as the training run, in a
worker process of rank 0 (`learner.worker_process`), and is refitted in place after each update (new
full weights reloaded, or a new LoRA adapter), never restarted.

    with RolloutEngine.started(model_dir, engine_config, adapter=True, log=run_dir / "rollout.log") as engine:
        rollouts = engine.generate(conversations, Sampling(n=4, temperature=1.0, max_tokens=64, seed=step))
        seconds = engine.refit(exported_dir)   # the policy after this step's update
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from learner.distributed import DistContext
from learner.rollout.records import Rollout, Sampling
from learner.worker_process import WorkerProcess
from trimtab.config import EngineConfig


@dataclass
class RolloutEngine:
    worker: WorkerProcess
    adapter: bool  # the policy is a LoRA adapter: refits load adapters, the base weights never change

    @classmethod
    @contextlib.contextmanager
    def started(cls, model_dir: Path, engine: EngineConfig, *, adapter: bool, log: Path) -> Iterator[RolloutEngine]:
        """Start the engine on `model_dir` (the policy's base); shut it down (its whole process group) on exit."""
        # Processed log-probs (after temperature) whatever serving uses: the PPO ratio's denominator.
        settings = engine.model_copy(update={"lora": adapter, "logprobs_mode": "processed_logprobs"})
        setup = {"model_dir": str(model_dir), "engine": settings.model_dump(mode="json")}
        with WorkerProcess.started("learner.rollout.worker", setup, name="the rollout engine", log=log) as worker:
            yield cls(worker, adapter)

    @classmethod
    @contextlib.contextmanager
    def on_main(
        cls, context: DistContext, model_dir: Path, engine: EngineConfig, *, adapter: bool, log: Path
    ) -> Iterator[RolloutEngine | None]:
        """`started` on rank 0, which alone samples; None on the other ranks."""
        if not context.is_main:
            yield None
            return
        with cls.started(model_dir, engine, adapter=adapter, log=log) as handle:
            yield handle

    def generate(self, conversations: Sequence[Sequence[dict[str, str]]], sampling: Sampling) -> list[Rollout]:
        """`sampling.n` rollouts per conversation, grouped by conversation in order."""
        payload = ([list(map(dict, c)) for c in conversations], sampling)
        rollouts: list[Rollout] = self.worker.call("generate", payload)
        return rollouts

    def refit(self, directory: Path) -> float:
        """Serve the weights exported to `directory` (full weights, or an adapter on the engine's base);
        the seconds it took."""
        started = time.perf_counter()
        self.worker.call("load_adapter" if self.adapter else "load_weights", str(directory))
        return time.perf_counter() - started
