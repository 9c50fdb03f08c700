"""One RL step over a policy being trained, for the offline recipe (`learner.rl.loop`) and the online
learner's RL phase alike:

    draw prompts -> rollouts (vLLM, n per prompt) -> score -> measure (actor, reference, critic)
    -> targets (advantages, returns) -> update -> refit the engine

Rank 0 alone owns the rollout engine and the reward; the rollouts and scores reach the other ranks by
broadcast, so every rank trains on the same data. Sampling seeds are a function of the step number.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from learner.checkpoint import TrainingState
from learner.distributed import DistContext, from_main
from learner.losses import KLController, update_kl_controller
from learner.publish import Contents, exported
from learner.rewards import Reward
from learner.rl.batch import rollout_batch
from learner.rl.measure import engine_drift, measure
from learner.rl.prompts import draw
from learner.rl.roles import Reference
from learner.rl.targets import targets
from learner.rl.update import StepData, Update, update
from learner.rollout import RolloutEngine, Sampling
from trimtab.config import TrimtabConfig
from trimtab.config.learner import LoraSettings
from trimtab.config.rl import RLConfig
from trimtab.jsonl import Messages


@dataclass(frozen=True)
class RLSteps:
    """What every step shares: the roles, the prompts and the reward."""

    config: TrimtabConfig  # learner.rl: the rollouts, the KL, each algorithm's settings
    algorithm: str  # ppo, grpo or rloo
    context: DistContext
    prompts: list[Messages]
    reward: Reward
    tokenizer: PreTrainedTokenizerBase
    pad_id: int
    actor: TrainingState  # its companion is the critic (PPO)
    reference: Reference
    lora: LoraSettings  # the actor's: refits load an adapter when enabled

    @property
    def rl(self) -> RLConfig:
        return self.config.learner.rl


def rl_step(
    run: RLSteps, engine: RolloutEngine | None, step: int, controller: KLController
) -> tuple[dict[str, float], KLController]:
    """One step; its metrics and the KL controller after it."""
    rl, timings = run.rl, Timings()
    conversations = draw(run.prompts, rl.rollout.prompts_per_step, seed=rl.rollout.seed, step=step)
    group = rl.rollout.group_size
    with timings("generate"):
        sampling = Sampling(group, rl.rollout.temperature, rl.rollout.max_tokens, seed=_sampling_seed(rl, step))
        rollouts = from_main(lambda: _engine(engine).generate(conversations, sampling), run.context)
    with timings("score"):
        texts = [rollout.text for rollout in rollouts]
        asked = [conversations[rollout.prompt] for rollout in rollouts]
        scores = torch.tensor(from_main(lambda: run.reward.batch(asked, texts), run.context))
    batch = rollout_batch(rollouts, run.pad_id)
    critic = run.actor.companion
    with timings("measure"):
        measured = measure(
            actor=run.actor.model,
            reference=run.reference,
            critic=critic.model if critic else None,
            batch=batch,
            temperature=rl.rollout.temperature,
            micro_batch_size=run.config.learner.train.micro_batch_size,
            context=run.context,
        )
    step_targets, target_metrics = targets(run.algorithm, scores, measured, batch.mask, rl, controller.kl_coef)
    with timings("train"):
        settings = Update(
            algorithm=run.algorithm,
            rl=rl,
            kl_coef=controller.kl_coef,
            temperature=rl.rollout.temperature,
            micro_batch_size=run.config.learner.train.micro_batch_size,
            grad_clip=run.config.learner.optim.grad_clip,
        )
        trained = update(
            run.actor, critic, StepData(batch, measured, step_targets), settings, context=run.context, seed=step
        )
    with timings("refit"):
        refit(run, engine)
    kl = float(((measured.old_logps - measured.reference_logps) * batch.mask).sum(-1).mean())
    metrics = {
        "score_mean": scores.mean().item(),
        "score_std": scores.std().item() if len(scores) > 1 else 0.0,
        "kl_per_sequence": kl,
        "kl_coef": controller.kl_coef,
        "response_tokens_mean": batch.mask.sum(-1).mean().item(),
        "truncated_share": sum(r.truncated for r in rollouts) / len(rollouts),
        **engine_drift(measured, batch),
        **target_metrics,
        **trained,
        **timings.seconds,
    }
    return metrics, update_kl_controller(controller, observed_kl=kl, n_steps=len(rollouts))


def _engine(engine: RolloutEngine | None) -> RolloutEngine:
    assert engine is not None, "rank 0 owns the rollout engine"
    return engine


class Timings:
    """Wall seconds of each part of a step, by name (`<name>_s` in the metrics)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[f"{name}_s"] = time.perf_counter() - started


def refit(run: RLSteps, engine: RolloutEngine | None) -> None:
    """The engine takes the actor's current weights (every rank joins the gather)."""
    contents = Contents(run.tokenizer, run.lora, reward_model=False)
    with exported(run.actor.model, contents, run.context) as directory:
        from_main(lambda: _engine(engine).refit(_exported(directory)), run.context)  # a failure stops every rank


def _exported(directory: Path | None) -> Path:
    assert directory is not None, "rank 0 writes the export"
    return directory


def _sampling_seed(rl: RLConfig, step: int) -> int:
    """Step `step`'s seeds start here; the engine adds prompt * n + k (`Sampling`)."""
    return rl.rollout.seed * 1_000_003 + step * rl.rollout.prompts_per_step * rl.rollout.group_size
