"""The RL step's parts on the CPU, without an engine: rollouts laid out as tensors where the trainer reads
them, each step's prompt draw reproducible (a resumed run draws the same), rows shared equally by ranks,
and an update that does not depend on how a minibatch is cut into micro-batches."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from learner.checkpoint import TrainingState
from learner.distributed import init_distributed, shutdown
from learner.losses import grpo_advantages
from learner.rl.batch import policy_logps, rollout_batch
from learner.rl.prompts import draw
from learner.rl.roles import Reference
from learner.rl.targets import Measured, Targets
from learner.rl.update import StepData, Update, minibatches, rank_rows, update
from learner.rollout import Rollout
from tests.learner.tiny import make_tiny_model
from trimtab.config import LearnerConfig
from trimtab.config.rl import RLConfig


def rollout(prompt: int, prompt_ids: list[int], response_ids: list[int]) -> Rollout:
    logprobs = tuple(-0.1 * (k + 1) for k in range(len(response_ids)))
    return Rollout(prompt, tuple(prompt_ids), tuple(response_ids), logprobs, "text", truncated=False)


def test_the_engines_log_probs_sit_where_the_trainer_reads_each_response_token() -> None:
    rollouts = [rollout(0, [5, 6, 7], [8, 9]), rollout(1, [5, 6], [10, 11, 12])]
    batch = rollout_batch(rollouts, pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7, 8, 9], [5, 6, 10, 11, 12]]
    # target t predicts input t + 1: row 0's response tokens are targets 2 and 3, row 1's 1 to 3
    assert batch.mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]
    assert batch.engine_logps[0].tolist() == pytest.approx([0, 0, -0.1, -0.2])
    assert batch.engine_logps[1].tolist() == pytest.approx([0, -0.1, -0.2, -0.3])
    assert batch.first == 1  # the LM head runs from row 1's first response target on


def test_each_steps_draw_is_a_function_of_the_step_and_covers_every_prompt_once_a_pass() -> None:
    prompts = [[{"role": "user", "content": f"q{i}"}] for i in range(6)]
    passes = [draw(prompts, 3, seed=1, step=step) for step in (1, 2)]
    assert sorted(p[0]["content"] for pass_ in passes for p in pass_) == [f"q{i}" for i in range(6)]
    assert draw(prompts, 3, seed=1, step=2) == passes[1]  # a resumed run draws the same
    assert draw(prompts, 3, seed=2, step=1) != passes[0]


def test_minibatches_partition_the_rows_and_ranks_take_equal_shares() -> None:
    cuts = minibatches(8, 2, seed=3)
    assert sorted(row for cut in cuts for row in cut) == list(range(8)) and [len(c) for c in cuts] == [4, 4]

    class Rank:
        def __init__(self, rank: int) -> None:
            self.rank, self.world_size = rank, 2

    rows = [7, 1, 4, 2]
    assert rank_rows(rows, Rank(0)) + rank_rows(rows, Rank(1)) == rows  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="3 rows cannot be shared equally by 2 ranks"):
        rank_rows([1, 2, 3], Rank(0))  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("rl-parts") / "tiny")


def trained_weights(model_dir: Path, micro_batch_size: int, aggregation: str) -> dict[str, torch.Tensor]:
    """One GRPO minibatch of 8 answers (2 prompts x 4) from a fresh copy of the tiny model."""
    context = init_distributed(LearnerConfig())
    try:
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        # Plain SGD: the new weights are the old minus the (clipped) gradient, so they compare the
        # gradients themselves. Adam's first step, about lr x sign(g), would turn float noise in a
        # near-zero gradient into a full step either way.
        sgd = torch.optim.SGD(model.parameters(), lr=1.0)
        actor = TrainingState(model, sgd, torch.optim.lr_scheduler.LambdaLR(sgd, lambda step: 1.0))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        generator = torch.Generator().manual_seed(1)
        rollouts = [
            rollout(i // 4, [5, 6, 7 + i // 4], torch.randint(8, 200, (2 + i % 3,), generator=generator).tolist())
            for i in range(8)
        ]
        batch = rollout_batch(rollouts, tokenizer.pad_token_id)
        with torch.no_grad():
            old = policy_logps(model, batch, temperature=1.0) * batch.mask
        measured = Measured(old, old - 0.01 * batch.mask, None)
        scores = torch.tensor([1.0, 0.0, 2.0, 0.5, -1.0, 0.0, 1.0, 3.0])
        targets = Targets(grpo_advantages(scores, group_size=4))
        rl = RLConfig.model_validate({"grpo": {"aggregation": aggregation}, "rollout": {"prompts_per_step": 2}})
        settings = Update("grpo", rl, kl_coef=0.1, temperature=1.0, micro_batch_size=micro_batch_size, grad_clip=1.0)
        update(actor, None, StepData(batch, measured, targets), settings, context=context, seed=1)
        return copy.deepcopy(model.state_dict())
    finally:
        shutdown(context)


@pytest.mark.parametrize("aggregation", ["sequence_mean", "token_mean"])
def test_the_update_is_the_same_whatever_the_micro_batches(tiny: Path, aggregation: str) -> None:
    whole, cut = trained_weights(tiny, 8, aggregation), trained_weights(tiny, 3, aggregation)
    start = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).state_dict()
    assert any(not torch.equal(whole[name], start[name]) for name in whole)  # it trained
    for name, weight in whole.items():
        assert torch.allclose(weight, cut[name], atol=1e-6), name


def test_the_reference_of_an_adapter_is_the_model_with_the_adapter_off(tiny: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny), LoraConfig(r=4, target_modules=["q_proj"]))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.fill_(0.5)  # a trained adapter
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad(), Reference(model, adapter_off=True).active() as reference:
        off = reference(input_ids=ids).logits
    base = AutoModelForCausalLM.from_pretrained(tiny)(input_ids=ids).logits
    with torch.no_grad():
        on = model(input_ids=ids).logits
    assert torch.allclose(off, base, atol=1e-6) and not torch.allclose(on, base, atol=1e-3)
