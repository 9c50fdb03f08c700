"""Activation checkpointing (learner.train.activation_checkpointing): it is applied (every block wrapped,
each block's forward run again during the backward) and changes nothing but memory and time.

Tolerance: loss curves with and without it agree within 1e-6 absolute per step (float32; the recomputed
forward runs the same kernels on the same inputs, so they are observed to be equal).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import yaml
from rich.console import Console
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper
from transformers import AutoModelForCausalLM

from learner.activation_checkpointing import checkpoint_blocks, checkpointed_blocks, decoder_layers
from learner.distributed import init_distributed, shard_model, shutdown
from learner.offline import METRICS_FILE, LearnRequest, run_learn
from tests.learner.tiny import arithmetic_rows, make_tiny_model, write_jsonl
from trimtab.config import LearnerConfig, load_config
from trimtab.registry import Registry

CURVE_TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("activation-checkpointing")
    make_tiny_model(root / "model")
    write_jsonl(root / "dpo.jsonl", arithmetic_rows(48, "dpo"))
    return root


def test_every_block_is_wrapped_and_recomputed_in_the_backward_pass(workdir: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(workdir / "model", dtype=torch.float32)
    assert checkpoint_blocks(model) == 2 == checkpointed_blocks(model)
    context = init_distributed(LearnerConfig())
    try:
        shard_model(model, torch.float32)  # FSDP2 over the wrapped blocks, as the learner does
        forwards = []
        for block in decoder_layers(model):
            assert isinstance(block, CheckpointWrapper)
            # A pre-hook: the recomputation stops as soon as it has what the backward needs, before
            # the block's forward returns.
            block._checkpoint_wrapped_module.register_forward_pre_hook(lambda *_: forwards.append(1))
        ids = torch.randint(0, 100, (2, 10))
        loss = model(input_ids=ids, labels=ids, use_cache=False).loss
        assert len(forwards) == 2  # one forward per block ...
        loss.backward()
        assert len(forwards) == 4  # ... and each again in the backward pass
    finally:
        shutdown(context)


def learn(workdir: Path, activation_checkpointing: bool) -> list[dict[str, float]]:
    learner = {
        "optim": {"lr": 1e-3, "warmup_steps": 0},
        "train": {"batch_size": 8, "micro_batch_size": 4, "activation_checkpointing": activation_checkpointing},
    }
    path = workdir / f"learner-ac-{activation_checkpointing}.yaml"
    path.write_text(yaml.safe_dump({"learner": learner, "registry": {"root": str(workdir / "registry")}}))
    config = load_config(path, environ={})
    request = LearnRequest("dpo", workdir / "dpo.jsonl", workdir / "model", steps=4)
    result = run_learn(config, request, Console(file=io.StringIO()))
    assert result.version_id is not None  # published: the wrapper's prefix is not in the weights' names
    lines = (Registry(config.registry.root).path(result.version_id) / METRICS_FILE).read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_the_loss_curve_is_the_same_with_and_without_it(workdir: Path) -> None:
    plain, checkpointed = learn(workdir, False), learn(workdir, True)
    assert [row["step"] for row in plain] == [row["step"] for row in checkpointed] == [1, 2, 3, 4]
    for a, b in zip(plain, checkpointed, strict=True):
        assert abs(a["loss"] - b["loss"]) <= CURVE_TOLERANCE, (a, b)
        assert abs(a["grad_norm"] - b["grad_norm"]) <= CURVE_TOLERANCE, (a, b)
    assert plain[-1]["loss"] < plain[0]["loss"]  # it trained
