"""`trimtab learn --algo ppo|grpo|rloo`, read top to bottom: set up the roles and the rollout engine (or
resume), then steps of

    draw prompts -> rollouts (vLLM, n per prompt) -> score -> measure (actor, reference, critic)
    -> targets (advantages, returns) -> update -> refit the engine -> log, checkpoint

and publish the final policy. Rank 0 alone owns the rollout engine and the reward; the rollouts and
scores reach the other ranks by broadcast, so every rank trains on the same data. Sampling seeds are a
function of the step, so a resumed run (the engine refitted to the restored weights first) samples what
the uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console
from transformers import AutoTokenizer
from transformers.utils import logging as transformers_logging

from learner.checkpoint import Checkpointer
from learner.distributed import DistContext, init_distributed, shutdown
from learner.losses import KLController
from learner.models import load_trainable
from learner.offline import LearnResult, Trained, pad_token_id, save_and_publish
from learner.phase import METRICS_FILE
from learner.rewards import reward_from
from learner.rl.prompts import load_prompts
from learner.rl.roles import constant_optimizer, disable_dropout, load_critic, load_reference
from learner.rl.step import RLSteps, refit, rl_step
from learner.rollout import RolloutEngine
from learner.runtime import device_and_dtype, seed_everything
from trimtab.config import TrimtabConfig
from trimtab.config.rl import RL_ALGORITHMS, RLConfig
from trimtab.errors import TrimtabError
from trimtab.registry import Registry


@dataclass(frozen=True)
class RLRequest:
    algorithm: str  # one of RL_ALGORITHMS
    prompts: Path  # JSONL of {"prompt": P}
    reward: str  # a reward version id, or 'module:function'
    model_dir: Path  # the starting policy, and the reference
    steps: int
    checkpoint_dir: Path | None = None


@dataclass(frozen=True)
class RLRun:
    """An offline run: its request, and what every step shares."""

    request: RLRequest
    console: Console
    steps: RLSteps

    @property
    def config(self) -> TrimtabConfig:
        return self.steps.config

    @property
    def context(self) -> DistContext:
        return self.steps.context

    @property
    def rl(self) -> RLConfig:
        return self.config.learner.rl


def run_rl(config: TrimtabConfig, request: RLRequest, console: Console) -> LearnResult:
    check_request(config, request)
    context = init_distributed(config.learner)
    try:
        check_ranks(config.learner.rl, context)
        run = setup_run(config, request, context, console)
        checkpointer = _checkpointer(run)
        found = checkpointer.latest() if checkpointer else None
        if found is not None:
            checkpointer.restore(found, run.steps.actor)  # type: ignore[union-attr]
            console.print(f"{request.algorithm}: resuming after step {found.step} ({found.path})")
        controller = KLController(**found.extra["kl"]) if found else kl_controller(run.rl)
        metrics: dict[str, float] = {}
        with tempfile.TemporaryDirectory(prefix="trimtab-rl-") as scratch, rollout_engine(run, Path(scratch)) as engine:
            if found is not None:
                refit(run.steps, engine)  # the engine starts on the base: give it the restored policy
            out = Path(scratch) / "version"  # what is published: the weights and the metrics log, not the engine's
            out.mkdir()
            log = out / METRICS_FILE
            log.write_text(found.metrics_log if found else "")
            for step in range((found.step if found else 0) + 1, request.steps + 1):
                metrics, controller = rl_step(run.steps, engine, step, controller)
                _report(run, step, metrics, log)
                if checkpointer and _checkpoint_due(run, step):
                    extra = {"kl": asdict(controller)}
                    checkpointer.save(step, run.steps.actor, metrics_log=log.read_text(), extra=extra)
            version = save_and_publish(config, _trained(run, metrics), context, out)
        return LearnResult(version, request.steps, metrics)
    finally:
        shutdown(context)


def check_ranks(rl: RLConfig, context: DistContext) -> None:
    """Every rank takes an equal share of each minibatch: its answers must divide by the ranks."""
    answers = rl.rollout.prompts_per_step * rl.rollout.group_size // rl.minibatches
    if answers % context.world_size:
        raise TrimtabError(
            f"a minibatch of {answers} answers (learner.rl.rollout.prompts_per_step x group_size / minibatches)"
            f" cannot be shared equally by {context.world_size} ranks"
        )


def check_request(config: TrimtabConfig, request: RLRequest) -> None:
    rl = config.learner.rl
    if request.algorithm not in RL_ALGORITHMS:
        raise TrimtabError(f"--algo {request.algorithm}: RL runs {', '.join(RL_ALGORITHMS)}")
    if request.algorithm in ("grpo", "rloo") and rl.rollout.group_size < 2:
        raise TrimtabError(
            f"{request.algorithm} compares answers to the same prompt: learner.rl.rollout.group_size must be"
            f" at least 2, got {rl.rollout.group_size}"
        )
    if not request.prompts.is_file():
        raise TrimtabError(f"--prompts {request.prompts}: no such file")


def setup_run(config: TrimtabConfig, request: RLRequest, context: DistContext, console: Console) -> RLRun:
    learner = config.learner
    transformers_logging.disable_progress_bar()  # a bar per refit's export would bury the step lines
    _, dtype = device_and_dtype(learner)
    seed_everything(learner.train.seed)
    prompts = load_prompts(request.prompts)
    reward = reward_from(request.reward, Registry(config.registry.root), config.reward_service, config.tls)
    tokenizer = AutoTokenizer.from_pretrained(request.model_dir)
    pad_id = pad_token_id(tokenizer)
    model = disable_dropout(
        load_trainable(
            request.model_dir, reward_model=False, lora=learner.lora, context=context, dtype=dtype, pad_token_id=pad_id
        )
    )
    actor = constant_optimizer(model, learner.optim.lr, learner.optim.grad_clip)
    if request.algorithm == "ppo":
        critic_dir = reward.model_dir or request.model_dir
        critic_model = load_critic(critic_dir, context=context, dtype=dtype, pad_token_id=pad_id)
        critic = constant_optimizer(disable_dropout(critic_model), learner.rl.ppo.critic_lr, learner.optim.grad_clip)
        actor = replace(actor, companion=critic)
    reference = load_reference(
        model, request.model_dir, lora=learner.lora, context=context, dtype=dtype, pad_token_id=pad_id
    )
    steps = RLSteps(
        config=config,
        algorithm=request.algorithm,
        context=context,
        prompts=prompts,
        reward=reward,
        tokenizer=tokenizer,
        pad_id=pad_id,
        actor=actor,
        reference=reference,
        lora=learner.lora,
    )
    return RLRun(request, console, steps)


def rollout_engine(run: RLRun, scratch: Path) -> contextlib.AbstractContextManager[RolloutEngine | None]:
    """Rank 0's rollout engine on the starting policy's weights (the base, for an adapter); None elsewhere."""
    adapter, log = run.config.learner.lora.enabled, scratch / "rollout.log"
    return RolloutEngine.on_main(run.context, run.request.model_dir, run.config.engine, adapter=adapter, log=log)


def kl_controller(rl: RLConfig) -> KLController:
    return KLController(kl_coef=rl.kl.coef, target=rl.kl.target, horizon=rl.kl.horizon)


def _checkpointer(run: RLRun) -> Checkpointer | None:
    settings = run.config.learner.checkpoint
    directory = run.request.checkpoint_dir or settings.directory
    if directory is None:
        return None
    fingerprint = {
        "algorithm": run.request.algorithm,
        "model_dir": str(run.request.model_dir.resolve()),
        "prompts": str(run.request.prompts.resolve()),
        "reward": run.steps.reward.name,
        "rl": run.rl.model_dump(mode="json"),
        "lora": run.config.learner.lora.model_dump(mode="json"),
    }
    return Checkpointer(directory, fingerprint, run.context, settings.keep)


def _checkpoint_due(run: RLRun, step: int) -> bool:
    # None after the last step: the published version is what survives it.
    return step % run.config.learner.checkpoint.every_steps == 0 and step < run.request.steps


def _report(run: RLRun, step: int, metrics: dict[str, float], log: Path) -> None:
    if not run.context.is_main:
        return
    with log.open("a") as handle:
        handle.write(json.dumps({"step": step, **metrics}) + "\n")
    if step % run.config.learner.log_every_steps == 0 or step == run.request.steps:
        run.console.print(
            f"  step {step}/{run.request.steps}: score {metrics['score_mean']:+.3f},"
            f" KL {metrics['kl_per_sequence']:.3f}, loss {metrics['loss']:.4f},"
            f" drift {metrics['engine_logp_drift_mean']:.1e},"
            f" generate {metrics['generate_s']:.1f}s train {metrics['train_s']:.1f}s refit {metrics['refit_s']:.2f}s"
        )


def _trained(run: RLRun, metrics: dict[str, float]) -> Trained:
    return Trained(
        model=run.steps.actor.model,
        tokenizer=run.steps.tokenizer,
        algorithm=run.request.algorithm,
        model_dir=run.request.model_dir,
        data_source=str(run.request.prompts.resolve()),
        steps=run.request.steps,
        metrics=metrics,
        details={"reward": run.steps.reward.name},
    )
