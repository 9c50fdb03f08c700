"""RL on live traffic, a phase of every round (`learner.online.rl`): the prompts the round's new feedback was
given on, answered anew by the policy (a rollout engine of rank 0's, started by the first round that runs
RL, that lives as long as the learner and is refitted in place), scored by the reward, and `steps` GRPO
or RLOO steps (`learner.rl.step`) on the policy, after the round's feedback is trained and before its
candidate is gated.

The reward is the learner's own newest reward model once it may judge (`reward_model.min_examples` new
examples trained; until then the phase is skipped, and the round says so), or a scorer, a reward service
or a reward version (`learner.online.rl.reward`). The KL to the reference (the model the learner
started from: the base with the adapter off) is a fixed beta here, `learner.rl.kl.coef`. RL steps are
counted in the learner's memory, so their sampling seeds continue across restarts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from learner.distributed import from_main
from learner.losses import KLController
from learner.online.heads import Head
from learner.online.items import Item
from learner.online.memory import LearnerMemory
from learner.online.run import OnlineRun
from learner.rewards import Reward, reward_from
from learner.rl.roles import Reference, disable_dropout, load_reference
from learner.rl.step import RLSteps, refit, rl_step
from learner.rollout import RolloutEngine
from trimtab.jsonl import Messages
from trimtab.registry import Registry

LEARNER_REWARD_MODEL = "reward_model"


@dataclass
class OnlineRL:
    reference: Reference
    resources: contextlib.ExitStack  # closes the engine with the learner
    engine: RolloutEngine | None = None  # rank 0's, started by the first round that runs RL
    engine_started: bool = False

    @classmethod
    @contextlib.contextmanager
    def started(cls, run: OnlineRun, policy: Head) -> Iterator[OnlineRL | None]:
        """The phase's reference, or None when `learner.online.rl` is off. Its rollout engine starts with
        the first round that can run RL (not while the reward model may not judge yet) and stops on exit."""
        if run.online.rl.algorithm == "off":
            yield None
            return
        disable_dropout(policy.state.model)
        reference = load_reference(
            policy.state.model,
            run.model_dir,
            lora=policy.lora,
            context=run.context,
            dtype=run.dtype,
            pad_token_id=run.pad_id,
        )
        with contextlib.ExitStack() as resources:
            yield cls(reference, resources)

    def _engine(self, run: OnlineRun, policy: Head) -> RolloutEngine | None:
        if not self.engine_started:
            log = run.online.checkpoint_dir / "rollout.log"
            on_main = RolloutEngine.on_main(
                run.context, run.model_dir, run.config.engine, adapter=policy.lora.enabled, log=log
            )
            self.engine, self.engine_started = self.resources.enter_context(on_main), True
        return self.engine

    def train(self, run: OnlineRun, policy: Head, memory: LearnerMemory, new: Sequence[Item]) -> dict[str, float]:
        """The round's RL steps on `policy`; their last step's metrics (prefixed `rl/`), or why none ran."""
        # Rank 0 scores; the other ranks learn only whether it will (a scorer need not be picklable).
        reward = _reward(run, memory) if run.context.is_main else Reward("rank 0's")
        if not from_main(lambda: reward is not None, run.context) or reward is None:
            if run.context.is_main:
                run.console.print(f"round {memory.rounds}: RL skipped: the reward model may not judge yet")
            return {"rl/skipped": 1.0}
        steps = RLSteps(
            config=run.config,
            algorithm=run.online.rl.algorithm,
            context=run.context,
            prompts=_prompts(new),
            reward=reward,
            tokenizer=run.tokenizer,
            pad_id=run.pad_id,
            actor=policy.state,
            reference=self.reference,
            lora=policy.lora,
        )
        engine = self._engine(run, policy)
        refit(steps, engine)  # the policy as the round's feedback left it
        controller = KLController(kl_coef=run.config.learner.rl.kl.coef)
        metrics: dict[str, float] = {}
        for _ in range(run.online.rl.steps):
            memory.rl_steps += 1
            metrics, _ = rl_step(steps, engine, memory.rl_steps, controller)
            run.meanwhile()
        if run.context.is_main:
            run.console.print(
                f"round {memory.rounds}: {run.online.rl.steps} {steps.algorithm} steps, score"
                f" {metrics['score_mean']:+.3f}, KL {metrics['kl_per_sequence']:.3f} ({reward.name})"
            )
        return {f"rl/{name}": value for name, value in metrics.items()}


def _reward(run: OnlineRun, memory: LearnerMemory) -> Reward | None:
    """Rank 0's reward for this round (None: the learner's reward model may not judge yet)."""
    registry = Registry(run.config.registry.root)
    spec = run.online.rl.reward
    if spec != LEARNER_REWARD_MODEL:
        return reward_from(spec, registry, run.config.reward_service, run.config.tls)
    version = memory.judging_reward_model(run.online.reward_model.min_examples)
    if version is None:
        return None
    return Reward(f"the learner's reward model {version}", model_dir=registry.path(version))


def _prompts(new: Sequence[Item]) -> list[Messages]:
    """The distinct conversations of the round's new feedback, in arrival order."""
    seen: dict[str, Messages] = {}
    for item in new:
        seen.setdefault(repr(item.prompt), item.prompt)
    return list(seen.values())
