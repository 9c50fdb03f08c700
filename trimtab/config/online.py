"""The online learner (`trimtab learn --online`): what it consumes, how it builds rounds, its gates and
its canary policy."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trimtab.config.base import Section


class FeedbackMix(Section):
    """Which algorithm trains each kind of feedback ('off': consumed and counted, not trained)."""

    pairwise: Literal["dpo", "ipo", "off"] = Field(default="dpo", description="A-vs-B preferences.")
    thumb: Literal["kto", "off"] = Field(default="kto", description="Thumbs up / down on one response.")
    correction: Literal["sft", "off"] = Field(default="sft", description="A user's corrected answer.")
    attributes: Literal["steerlm", "off"] = Field(
        default="steerlm", description="SteerLM attribute scores of a response (attribute-conditioned SFT)."
    )
    rating: Literal["rm", "off"] = Field(
        default="rm", description="1-5 ratings of one response: the reward model (Bradley-Terry vs a reference)."
    )
    pairwise_reward_model: bool = Field(
        default=True, description="Pairs also train the reward model (Bradley-Terry), besides the policy (if any)."
    )

    @property
    def trains_reward_model(self) -> bool:
        return self.rating == "rm" or self.pairwise_reward_model


class RoundConfig(Section):
    """When a round trains and what goes into it."""

    examples: int = Field(default=64, ge=1, description="Train once this many new usable examples are waiting...")
    max_examples: int = Field(
        default=256,
        ge=1,
        description="Most new examples one round takes: all that wait, up to this (the rest wait for the next).",
    )
    seconds: float = Field(default=90.0, gt=0, description="...or this long after the last round, if any are.")
    min_examples: int = Field(default=8, ge=1, description="Fewest new examples worth a round at the deadline.")
    epochs: int = Field(default=2, ge=1, description="Passes over a round's examples (new + replay + anchor).")
    max_user_share: float = Field(
        default=0.25, gt=0, le=1, description="No single user's feedback may exceed this share of a round."
    )
    replay_share: float = Field(
        default=0.25, ge=0, lt=1, description="Share of each round drawn from earlier rounds' examples."
    )
    replay_capacity: int = Field(default=2000, ge=0, description="Examples kept for replay (reservoir sample).")
    anchor_examples: int = Field(
        default=16, ge=0, description="The suite's anchor demonstrations (its first n) trained by SFT every round."
    )
    importance_clip: float = Field(
        default=2.0, ge=1, description="Truncation c of the per-sequence importance ratio min(c, pi_t / pi_served)."
    )


class RewardModelConfig(Section):
    """The reward model the online learner trains beside the policy, on ratings and pairs (`mix`)."""

    # Held-out pairwise accuracy against the gold reward of reward models trained on one default demo's
    # 594 pairs and 173 ratings (2 epochs; 248 held-out pairs of world-rendered answers): full weights
    # 81.5% at 5e-4 (75% at 2e-4, 74% at 1e-3), a LoRA adapter 71% at 5e-4 (65% at 2e-3).
    adapter: bool = Field(
        default=False,
        description="Train the reward model as a LoRA adapter (learner.lora's shape; merged when published);"
        " false: full weights, which rank answers better at the default model's size.",
    )
    lr: float = Field(default=5e-4, gt=0, description="Constant learning rate of the reward model's optimiser.")
    min_examples: int = Field(
        default=64, ge=1, description="New examples it must have trained on before it may judge the reward gate."
    )


class GateConfig(Section):
    """Offline gates a candidate must pass before it serves as the canary."""

    enabled: bool = Field(default=True, description="Evaluate candidates; off: every candidate becomes the canary.")
    reward_judge: Literal["reward_model", "suite"] = Field(
        default="reward_model",
        description="Who scores the held-out answers for the reward gate: the learner's own reward model, or"
        " the suite's judge (suite.judge: a scorer or a reward-model version; the world's gold reward in the demo).",
    )
    heldout_prompts: int = Field(
        default=48, ge=1, description="The suite's held-out prompts (its first n) the candidate answers."
    )
    reward_tolerance: float = Field(
        default=0.0, ge=0, description="Held-out mean reward may be at most this much below current's."
    )
    reward_confidence: float = Field(
        default=0.9,
        ge=0.5,
        lt=1,
        description="One-sided confidence that the candidate's held-out mean reward is below current's by more"
        " than the tolerance before refusing it (paired over the prompts); 0.5: the plain means decide.",
    )
    max_kl: float = Field(default=8.0, gt=0, description="Bound on KL(candidate || reference model), nats/response.")
    max_anchor_regression: float = Field(
        default=0.25, ge=0, description="Bound on the rise of the anchor set's SFT loss vs current's (nats/token)."
    )


class CanaryConfig(Section):
    """Live comparison of the canary with current, and the promote / roll-back decision."""

    enabled: bool = Field(default=True, description="Set passing candidates as canary and decide on them.")
    share: float = Field(default=0.5, gt=0, le=1, description="Share of users (stable hash) the canary serves.")
    min_feedback: int = Field(
        default=30, ge=1, description="Verdicts (thumbs, and ratings unless off) on each side before deciding."
    )
    max_feedback: int = Field(
        default=90,
        ge=1,
        description="Verdicts on each side after which a canary still neither within the margin nor shown worse"
        " is rolled back as inconclusive: the candidates waiting behind it (descendants, carrying its updates)"
        " do not wait on it for ever.",
    )
    ratings: bool = Field(
        default=True,
        description="Count 1-5 ratings as verdicts beside thumbs: 4-5 up, 1-2 down, 3 neither. More evidence per"
        " minute, so each canary is decided sooner (a new version first reaches users as the canary).",
    )
    helpfulness: bool = Field(
        default=True,
        description="Count SteerLM attribute scores that set helpfulness (0-4, the answer's overall quality) as"
        " verdicts too: 3-4 up, 0-1 down, 2 neither. Like ratings: more evidence per minute.",
    )
    confidence: float = Field(
        default=0.9, gt=0.5, lt=1, description="One-sided confidence that the canary is worse before rolling back."
    )
    margin: float = Field(
        default=0.05, ge=0, le=1, description="Promote unless the canary's up-rate is below current's by more."
    )

    @model_validator(mode="after")
    def _evidence_bounds(self) -> CanaryConfig:
        if self.max_feedback < self.min_feedback:
            raise ValueError(f"max_feedback ({self.max_feedback}) is below min_feedback ({self.min_feedback})")
        return self


class RaterConfig(Section):
    """Each user's feedback weighted by how often their own comparisons agree with an independent judge
    (`learner.online.raters`): users who vote against it lose their weight in training and the canary."""

    judge: Literal["suite", "off"] = Field(
        default="suite",
        description="'suite': the suite's judge (a scorer function; the world's gold reward in the demo) scores"
        " the answers users vote on; 'off': every user weighs 1 (an operator without an independent judge).",
    )
    prior_votes: float = Field(
        default=10.0,
        gt=0,
        description="Strength of the prior that a user agrees with the judge half the time, in comparisons:"
        " how much evidence it takes before a user's weight falls.",
    )


class OnlineRLConfig(Section):
    """RL on live traffic in every round: after the round's feedback is trained, `steps` RL steps (learner.rl's
    rollouts, KL and algorithm settings) on the prompts of the round's new feedback, answered anew by the
    policy and scored by the reward; the anchor and every other gate then judge the result."""

    algorithm: Literal["off", "grpo", "rloo"] = Field(
        default="off", description="The RL algorithm of the rounds (PPO's critic is not kept online yet)."
    )
    steps: int = Field(default=4, ge=1, description="RL steps per round.")
    reward: str = Field(
        default="reward_model",
        description="'reward_model': the learner's own newest reward model, once it may judge"
        " (reward_model.min_examples); or what `trimtab learn --reward` takes: 'module:function',"
        " 'grpc://HOST:PORT', a reward version.",
    )


class OnlineConfig(Section):
    """`trimtab learn --online`: consume trimtab.feedback, train rounds, gate, canary, promote."""

    group_id: str = Field(default="trimtab-learner", description="Kafka consumer group (offsets mirrored there).")
    checkpoint_dir: Path = Field(
        default=Path(".trimtab/learner/online"), description="Durable checkpoints (weights, offsets, buffers)."
    )
    keep_checkpoints: int = Field(default=2, ge=1, description="Newest checkpoints kept.")
    adapter: bool = Field(
        default=True,
        description="Train a LoRA adapter (learner.lora's shape) on the served base, so that a candidate can"
        " serve as canary beside current in one engine; false: full weights, promoted without a canary.",
    )
    # An adapter's update is low-rank and scaled by alpha / r, so it takes a larger rate than full weights
    # (offline full-weight DPO/KTO on the default model: 1e-4; bench/alignment.py). At 2e-4 a 10-minute
    # demo's rounds moved the policy by KL 0.004 nats after four rounds: too slow to learn in the demo.
    lr: float = Field(
        default=5e-4, gt=0, description="Constant learning rate of the online optimiser (the default: for LoRA)."
    )
    batch_size: int = Field(default=16, ge=1, description="Examples per optimiser step (all ranks).")
    stop_when_idle_s: float = Field(
        default=0.0, ge=0, description="Exit once no feedback arrived for this long (0: run until stopped)."
    )
    max_rounds: int = Field(default=0, ge=0, description="Exit after this many rounds (0: no limit).")
    mix: FeedbackMix = Field(default_factory=FeedbackMix, description="Algorithm per feedback kind.")
    reward_model: RewardModelConfig = Field(
        default_factory=RewardModelConfig, description="The reward model trained on ratings and pairs."
    )
    round: RoundConfig = Field(default_factory=RoundConfig, description="Round size, mix and guards.")
    gates: GateConfig = Field(default_factory=GateConfig, description="Offline gates before serving.")
    canary: CanaryConfig = Field(default_factory=CanaryConfig, description="Canary, promotion, roll-back.")
    raters: RaterConfig = Field(
        default_factory=RaterConfig, description="Users weighted by their agreement with the suite's judge."
    )
    rl: OnlineRLConfig = Field(default_factory=OnlineRLConfig, description="RL on live traffic in each round.")
    redis_wait_s: float = Field(
        default=120.0,
        ge=0,
        description="How long the learner waits for an unreachable Redis (the registry's current and canary"
        " pointers it reads and sets) before it stops with the error; a warning every 10 s meanwhile.",
    )
