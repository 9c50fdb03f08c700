"""Device, dtype and seeding from config: the one code path for CPU and GPU."""

from __future__ import annotations

import random

import numpy as np
import torch

from trimtab.config import LearnerConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_and_dtype(config: LearnerConfig) -> tuple[torch.device, torch.dtype]:
    """The configured device and dtype; an unavailable device is an error, never a silent fallback."""
    if config.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("learner.device is 'cuda' but torch sees no CUDA device")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    return torch.device(config.device), DTYPES[config.dtype]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
