"""The learner's model at one rank (learner.distributed.shard_model): no FSDP2, and a bf16 run computes
under autocast over float32 master weights, whose gradients stay float32."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch.distributed.fsdp import FSDPModule
from transformers import AutoModelForCausalLM

from learner.distributed import DistContext, init_distributed, shard_model, shutdown
from tests.learner.tiny import make_tiny_model
from trimtab.config import LearnerConfig

# bf16 keeps 8 bits of mantissa: the tiny model's mean loss agrees with float32's to about 1e-2.
BF16_LOSS_TOLERANCE = 5e-2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("one-rank") / "model")


@pytest.fixture
def one_rank() -> Iterator[DistContext]:
    context = init_distributed(LearnerConfig())
    yield context
    shutdown(context)


def test_one_rank_in_bf16_trains_float32_masters_under_autocast(model_dir: Path, one_rank: DistContext) -> None:
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    shard_model(model, torch.bfloat16)
    assert not isinstance(model, FSDPModule)

    ids = torch.randint(1, model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    output = model(input_ids=ids, labels=ids, use_cache=False)
    assert output.logits.dtype == torch.bfloat16  # the matrix products ran in bf16 ...
    output.loss.backward()
    for parameter in model.parameters():  # ... from float32 weights, which get float32 gradients
        assert parameter.dtype == torch.float32
        assert parameter.grad is not None and parameter.grad.dtype == torch.float32
    assert any(bool(parameter.grad.abs().sum() > 0) for parameter in model.parameters())
    expected = reference(input_ids=ids, labels=ids, use_cache=False).loss
    assert abs(output.loss.item() - expected.item()) < BF16_LOSS_TOLERANCE


def test_one_rank_in_bf16_still_generates(model_dir: Path, one_rank: DistContext) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    shard_model(model, torch.bfloat16)
    prompt = torch.tensor([[model.config.bos_token_id, 5, 6]])
    # generate checks its arguments against the signature of `forward`: the autocast wrapper keeps it.
    generated = model.generate(prompt, max_new_tokens=3, do_sample=False, pad_token_id=model.config.pad_token_id)
    assert generated.shape == (1, 6)


def test_one_rank_in_float32_is_the_plain_module(model_dir: Path, one_rank: DistContext) -> None:
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    forward = model.forward
    shard_model(model, torch.float32)
    assert not isinstance(model, FSDPModule) and model.forward == forward
