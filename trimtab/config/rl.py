"""RL on sampled answers (`trimtab learn --algo ppo|grpo|rloo`): rollouts, the KL to the reference, and each
algorithm's own settings."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from trimtab.config.base import Section

# `trimtab learn --algo` values that train on the policy's own samples (learner.rl.loop).
RL_ALGORITHMS = ("ppo", "grpo", "rloo")


class RolloutSettings(Section):
    """What the rollout engine samples each step (learner.rollout)."""

    prompts_per_step: int = Field(default=8, ge=1, description="Prompts drawn per step (all ranks together).")
    group_size: int = Field(
        default=4, ge=1, description="Answers sampled per prompt: GRPO's and RLOO's group (at least 2 for them)."
    )
    max_tokens: int = Field(default=64, ge=1, description="Longest sampled answer, in tokens.")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature of the rollouts.")
    seed: int = Field(default=0, description="Seed of the prompt draws and of the sampling.")


class KLSettings(Section):
    """The KL to the reference (the starting policy), as a penalty: in the rewards (PPO, RLOO) or the loss (GRPO)."""

    coef: float = Field(default=0.05, ge=0, description="beta: its initial coefficient (0: no KL term).")
    estimator: Literal["k1", "k3"] = Field(
        default="k1",
        description="Per-token estimator of the KL in PPO's and RLOO's rewards: k1 (InstructGPT's) or k3;"
        " GRPO's loss always takes k3, as the paper's.",
    )
    target: float | None = Field(
        default=None,
        gt=0,
        description="Adaptive control (Ziegler et al.): steer beta toward this KL per sequence; None: a fixed beta.",
    )
    horizon: int = Field(default=10_000, ge=1, description="The adaptive controller's horizon, in sampled answers.")


class PPOSettings(Section):
    """PPO with a critic (InstructGPT): per-token rewards with the KL penalty, GAE, clipped policy and value losses."""

    clip_ratio: float = Field(default=0.2, gt=0, lt=1, description="epsilon of the clipped surrogate.")
    value_clip: float = Field(default=0.2, gt=0, description="The clipped value loss's range, in reward units.")
    gamma: float = Field(default=1.0, ge=0, le=1, description="Discount of GAE.")
    lam: float = Field(default=0.95, ge=0, le=1, description="lambda of GAE.")
    value_coef: float = Field(default=0.1, gt=0, description="Weight of the value loss beside the policy loss.")
    critic_lr: float = Field(default=1e-4, gt=0, description="The critic's learning rate.")
    whiten_advantages: bool = Field(default=True, description="Whiten the advantages over each step's tokens.")


class GRPOSettings(Section):
    """GRPO's group-relative advantages and how its token losses are averaged."""

    scale_std: bool = Field(
        default=True, description="Divide group-centred rewards by the group's std (false: Dr. GRPO's advantages)."
    )
    aggregation: Literal["sequence_mean", "token_mean"] = Field(
        default="sequence_mean",
        description="How token losses become one: per answer then mean (the paper's), or per token.",
    )


class RLConfig(Section):
    """`trimtab learn --algo ppo|grpo|rloo --prompts F.jsonl --reward R`."""

    steps: int = Field(default=100, ge=1, description="Rollout steps of a run when --steps is not given.")
    epochs: int = Field(
        default=1, ge=1, description="Optimisation passes over each step's rollouts (PPO's epochs; 1: on-policy)."
    )
    minibatches: int = Field(
        default=1, ge=1, description="Optimiser steps per pass: the rollouts split this many ways."
    )
    clip_ratio: float = Field(default=0.2, gt=0, lt=1, description="epsilon of GRPO's and RLOO's clipped surrogate.")
    rollout: RolloutSettings = Field(default_factory=RolloutSettings, description="Sampling.")
    kl: KLSettings = Field(default_factory=KLSettings, description="The KL penalty to the reference.")
    ppo: PPOSettings = Field(default_factory=PPOSettings, description="PPO's critic and advantages.")
    grpo: GRPOSettings = Field(default_factory=GRPOSettings, description="GRPO's advantages and loss.")

    @model_validator(mode="after")
    def _minibatches_divide_the_rollouts(self) -> RLConfig:
        answers = self.rollout.prompts_per_step * self.rollout.group_size
        if answers % self.minibatches:
            raise ValueError(f"minibatches ({self.minibatches}) must divide the {answers} answers of a step")
        return self
