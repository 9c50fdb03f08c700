"""`trimtab demo` (`make demo`): which processes the harness runs, how its simulated users behave, and
where its report goes. The defaults fit the whole demo in 15 minutes on a 2-core CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trimtab.config.base import Section

FeedbackKind = Literal["pairwise", "thumb", "rating", "attributes", "correction"]
FEEDBACK_KINDS: tuple[FeedbackKind, ...] = ("pairwise", "thumb", "rating", "attributes", "correction")


class FeedbackMix(Section):
    """Relative weights of the feedback kinds the simulated users give (normalised; 0 turns a kind off).
    A pairwise interaction asks for two candidates (n=2), every other kind for one."""

    pairwise: float = Field(default=0.4, ge=0, description="A-vs-B choices (DPO/IPO pairs, reward model).")
    thumb: float = Field(default=0.3, ge=0, description="Thumbs up/down (KTO).")
    rating: float = Field(default=0.1, ge=0, description="1-5 ratings (reward model).")
    attributes: float = Field(default=0.1, ge=0, description="SteerLM attribute scores.")
    correction: float = Field(default=0.1, ge=0, description="Corrected answers (SFT).")

    @model_validator(mode="after")
    def _some_weight(self) -> FeedbackMix:
        if sum(self.weights().values()) <= 0:
            raise ValueError("at least one feedback kind needs a positive weight")
        return self

    def weights(self) -> dict[FeedbackKind, float]:
        return {kind: float(getattr(self, kind)) for kind in FEEDBACK_KINDS}


class DemoUsersConfig(Section):
    """The simulated users: a population of the synthetic world calling the real gRPC endpoints."""

    duration_s: float = Field(default=600.0, gt=0, description="How long the users keep interacting, in seconds.")
    rate: float = Field(
        default=3.0,
        gt=0,
        description="Interactions started per second (a target: the concurrency limit holds it back when serving"
        " is slower).",
    )
    concurrency: int = Field(default=8, ge=1, description="Interactions in flight at most.")
    adversarial_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Share of adversarial users (flip labels, upvote unsafe answers); overrides"
        " world.users.adversarial_share for the demo's population.",
    )
    noise: float = Field(
        default=0.1,
        ge=0,
        le=0.5,
        description="Mean label-flip rate of a user (0 exact, 0.5 chance); overrides world.users.noise.",
    )
    mix: FeedbackMix = Field(default_factory=FeedbackMix, description="Which kinds of feedback users give.")
    temperature: float = Field(default=1.0, ge=0, le=2, description="Sampling temperature the users ask for.")
    max_tokens: int = Field(default=64, ge=1, description="max_tokens of each Generate call.")
    seed: int = Field(default=0, description="Seed of the users' choices (user, prompt, kind, labels, sampling).")
    rpc_timeout_s: float = Field(default=60.0, gt=0, description="Deadline of each Generate or Submit call.")
    submit_retry_s: float = Field(
        default=30.0,
        ge=0,
        description="How long a submission is retried (same feedback_id) on UNAVAILABLE or RESOURCE_EXHAUSTED"
        " before it counts as failed (NOT_FOUND is final).",
    )


class DemoConfig(Section):
    """The `make demo` harness: the local stack, serving, feedback, the online learner and the users."""

    output_dir: Path = Field(
        default=Path(".trimtab/demo"), description="Each run writes its logs and report to <output_dir>/<run>/."
    )
    learner: bool = Field(
        default=True, description="Run the online learner (2 torchrun ranks); false: serving and feedback only."
    )
    isolate_run: bool = Field(
        default=True,
        description="Give the run its own Redis key prefix, registry directory and topic names, so that it starts"
        " from the default model whatever an earlier run promoted.",
    )
    serving_address: str | None = Field(
        default=None,
        description="host:port of a serving tier already running (with this config's Redis and registry) to use"
        " instead of starting `trimtab serve`; requires isolate_run false.",
    )
    start_timeout_s: float = Field(
        default=300.0, gt=0, description="How long serving and feedback may take to report SERVING."
    )
    stop_timeout_s: float = Field(
        default=60.0, gt=0, description="Grace after SIGTERM before a process of the demo is killed."
    )
    refresh_s: float = Field(
        default=1.0, gt=0, description="Period of the live display and of polling versions, swaps and processes."
    )
    live: bool = Field(default=True, description="Show the live progress display (rich Live) while users run.")
    rolling_window: int = Field(default=200, ge=1, description="Answers in the rolling mean gold reward.")
    bin_s: float = Field(default=30.0, gt=0, description="Width of the report's time bins, in seconds.")
    eval_prompts: int = Field(
        default=256,
        ge=0,
        description="Held-out prompts of the final check (latest promoted version vs the default model); 0 skips.",
    )
    reward_judge: Literal["gold", "reward_model"] = Field(
        default="gold",
        description="Who scores the online learner's held-out reward gate in the demo (it sets"
        " learner.online.gates.reward_judge): the world's gold reward, or the learner's reward model as a"
        " deployment without a gold judge would.",
    )
    users: DemoUsersConfig = Field(default_factory=DemoUsersConfig, description="The simulated users.")

    @model_validator(mode="after")
    def _external_serving_not_isolated(self) -> DemoConfig:
        if self.serving_address is not None and self.isolate_run:
            raise ValueError(
                "serving_address: an external serving tier keeps its own Redis prefix and registry;"
                " set isolate_run: false"
            )
        return self
