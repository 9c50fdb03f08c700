"""How the learner trains: device, precision, distributed backend, optimiser."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trimtab.config.base import Section


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
