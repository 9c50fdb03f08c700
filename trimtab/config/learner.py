"""How the learner trains: device, precision, distributed backend, optimiser."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from trimtab.config.base import Section
from trimtab.config.online import OnlineConfig
from trimtab.config.rl import RLConfig

# Every algorithm `trimtab learn --algo` runs (learner.objectives.OBJECTIVES has one entry for each).
ALGORITHMS = ("sft", "steerlm", "rm", "dpo", "ipo", "kto", "orpo", "simpo", "spin")


class OptimConfig(Section):
    """AdamW with linear warm-up and cosine decay."""

    lr: float = Field(default=1e-3, gt=0, description="Peak learning rate.")
    weight_decay: float = Field(default=0.01, ge=0, description="AdamW decoupled weight decay.")
    betas: tuple[float, float] = Field(default=(0.9, 0.95), description="AdamW beta1, beta2.")
    warmup_steps: int = Field(default=50, ge=0, description="Steps of linear warm-up from 0 to lr.")
    min_lr_ratio: float = Field(default=0.1, ge=0, le=1, description="Final lr as a share of the peak.")
    grad_clip: float = Field(default=1.0, gt=0, description="Clip the global gradient norm to this.")


class LossConfig(Section):
    """Hyper-parameters of the offline alignment losses (learner.losses), by algorithm."""

    dpo_beta: float = Field(
        default=0.1, gt=0, description="DPO beta: the strength of the implicit KL to the reference."
    )
    dpo_label_smoothing: float = Field(
        default=0.0, ge=0, lt=0.5, description="cDPO: assumed probability that a preference label is flipped."
    )
    ipo_tau: float = Field(default=0.1, gt=0, description="IPO tau: the margin regressed onto is 1 / (2 tau).")
    kto_beta: float = Field(default=0.1, gt=0, description="KTO beta.")
    kto_desirable_weight: float = Field(default=1.0, gt=0, description="KTO lambda_D, weight of desirable examples.")
    kto_undesirable_weight: float = Field(
        default=1.0, gt=0, description="KTO lambda_U, weight of undesirable examples."
    )
    simpo_beta: float = Field(default=2.0, gt=0, description="SimPO beta: scale of the length-normalised reward.")
    simpo_gamma: float = Field(default=1.0, ge=0, description="SimPO gamma: the target reward margin.")
    orpo_lambda: float = Field(default=0.1, gt=0, description="ORPO lambda: weight of the odds-ratio term.")
    rm_center_coefficient: float = Field(
        default=0.0, ge=0, description="Reward model: weight of the (r_w + r_l)^2 centering term (0 = the paper's)."
    )
    spin_beta: float = Field(
        default=0.1, gt=0, description="SPIN lambda: the DPO-style beta against the previous iterate."
    )


class SpinConfig(Section):
    """Self-play fine-tuning: each iteration generates the rejected side with the current model (vLLM)."""

    iterations: int = Field(default=2, ge=1, description="Self-play iterations; each starts from the last.")
    max_tokens: int = Field(default=64, ge=1, description="Longest generated response, in tokens.")
    temperature: float = Field(
        default=0.0, ge=0, description="Sampling temperature of the generations (0: greedy, the paper's mode)."
    )


class LoraSettings(Section):
    """Low-rank adapters (peft): train only A and B; publish the result as an adapter version."""

    enabled: bool = Field(default=False, description="Train a LoRA adapter instead of the full weights.")
    rank: int = Field(default=16, ge=1, description="r; serving's engine.max_lora_rank must be at least this.")
    alpha: float = Field(default=32.0, gt=0, description="lora_alpha: the update is scaled by alpha / r.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter's input.")
    target_modules: tuple[str, ...] = Field(
        default=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
        description="Linear layers that get adapters (Llama-family names; vLLM serves these).",
    )


class TrainConfig(Section):
    """Batch geometry and length of an offline run (`trimtab learn`)."""

    batch_size: int = Field(
        default=16, ge=1, description="Global batch: examples (pairs for DPO/IPO) per optimiser step, all ranks."
    )
    micro_batch_size: int = Field(
        default=8, ge=1, description="Examples per forward pass on one rank; the rest is gradient accumulation."
    )
    epochs: int = Field(default=1, ge=1, description="Passes over the data when --steps is not given.")
    max_length: int = Field(default=512, ge=8, description="Longest sequence in tokens; longer examples are an error.")
    seed: int = Field(default=0, description="Seed of the initial shuffle and of torch.")
    activation_checkpointing: bool = Field(
        default=False,
        description="Recompute each transformer block's activations in the backward pass: less memory, more compute.",
    )


class CheckpointConfig(Section):
    """Durable checkpoints of a run (learner.checkpoint): a killed run started again resumes from the newest."""

    directory: Path | None = Field(
        default=None,
        description="Where checkpoints go, shared by all ranks; None: none (or `trimtab learn --checkpoint-dir`).",
    )
    every_steps: int = Field(default=100, ge=1, description="Optimiser steps between checkpoints.")
    keep: int = Field(
        default=2, ge=1, description="Newest checkpoints kept; older ones go once a newer one is durable."
    )


class LearnerConfig(Section):
    """Where and in what precision the learner runs (the one code path for CPU and GPU)."""

    device: Literal["cpu", "cuda"] = Field(default="cpu", description="Device of the model being trained.")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        # float32 on CPU: bf16 matmul runs at about half the float32 rate on our CPUs (design.md).
        default="float32",
        description="Parameter and compute dtype; bfloat16 on GPUs.",
    )
    backend: Literal["gloo", "nccl"] = Field(
        default="gloo", description="torch.distributed backend under torchrun; nccl on GPUs."
    )
    torch_threads: int = Field(default=0, ge=0, description="Intra-op threads per rank; 0 leaves torch's default.")
    log_every_steps: int = Field(default=10, ge=1, description="Steps between metric log lines.")
    optim: OptimConfig = Field(default_factory=OptimConfig, description="Optimiser and schedule.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Batch geometry and run length.")
    loss: LossConfig = Field(default_factory=LossConfig, description="Loss hyper-parameters by algorithm.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoint and resume.")
    lora: LoraSettings = Field(default_factory=LoraSettings, description="Train a LoRA adapter (any algorithm).")
    spin: SpinConfig = Field(default_factory=SpinConfig, description="SPIN's self-play iterations.")
    online: OnlineConfig = Field(default_factory=OnlineConfig, description="The online learner (learn --online).")
    rl: RLConfig = Field(default_factory=RLConfig, description="RL on sampled answers (--algo ppo|grpo|rloo).")

    @model_validator(mode="after")
    def _online_rl_compares_answers(self) -> LearnerConfig:
        if self.online.rl.algorithm != "off" and self.rl.rollout.group_size < 2:
            raise ValueError(
                f"online.rl.algorithm {self.online.rl.algorithm} compares answers to the same prompt:"
                f" rl.rollout.group_size must be at least 2, got {self.rl.rollout.group_size}"
            )
        return self
