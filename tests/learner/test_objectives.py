"""The objectives' parts that run before the loss: KTO's reference point z_0 is estimated on the device,
without a graph, as the mean policy-minus-reference log-ratio of the mismatched completions."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from learner.batching import TokenizedExample
from learner.data import TrainExample
from learner.objectives import MicroBatch, kto_kl_sum, summed_logps
from tests.learner.tiny import make_tiny_model

PAD = 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    directory = make_tiny_model(tmp_path_factory.mktemp("objectives") / "model")
    return AutoModelForCausalLM.from_pretrained(Path(directory), dtype=torch.float32)


def kto_micro_batch() -> MicroBatch:
    completion = TokenizedExample([5, 6, 7, 8], [0, 0, 1, 1])
    mismatched = [TokenizedExample([5, 6, 9], [0, 0, 1]), TokenizedExample([5, 6, 10, 11, 12], [0, 0, 1, 1, 1])]
    examples = [TrainExample((completion, other), desirable=i == 0) for i, other in enumerate(mismatched)]
    return MicroBatch(examples, reference=torch.tensor([[-3.0, -2.0], [-3.5, -6.0]]))


def test_the_kto_reference_point_is_a_detached_device_sum_of_log_ratios(tiny_model: nn.Module) -> None:
    micro = kto_micro_batch()
    estimate = kto_kl_sum(tiny_model, micro, PAD)
    policy = summed_logps(tiny_model, [e.sequences[1] for e in micro.examples], PAD).detach()
    assert estimate.shape == () and not estimate.requires_grad
    assert estimate.device == next(tiny_model.parameters()).device
    assert float(estimate) == pytest.approx(float((policy - torch.tensor([-2.0, -6.0])).sum()), abs=1e-5)
