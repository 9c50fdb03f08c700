"""learner.evaluate: judged rewards, win rate, the KL estimator and LoRA merging on a tiny model (fast);
greedy answers, samples and in-place weight swaps through the shared vLLM engine (integration)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer, PreTrainedModel

from learner.batching import tokenize_chat
from learner.evaluate import (
    Evaluation,
    KLEstimate,
    SampledResponse,
    full_weights_dir,
    greedy_answers,
    judge_answers,
    kl_estimate,
    load_hf_model,
    load_weights,
    response_logps,
    sample_responses,
    win_rate,
)
from tests.learner.tiny import make_tiny_model
from trimtab.config import TrimtabConfig
from trimtab.simulation.default_model.sampling import sample_with_hf
from trimtab.simulation.evaluation import heldout_prompts, messages_of
from trimtab.simulation.world import World
from trimtab.suite import checked
from trimtab.testing import perturbed_copy, random_lora


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("evaluate") / "tiny")


def prompt_ids(model_dir: Path, text: str) -> list[int]:
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    example = tokenize_chat(tokenizer, [{"role": "user", "content": text}], "")
    return example.input_ids[: example.loss_mask.index(1)]  # the templated prompt, without the end-of-turn


def next_token_logps(model: PreTrainedModel, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), dim=-1)


def test_an_evaluation_without_a_judge_measures_answers_and_kl_but_no_reward() -> None:
    kl = KLEstimate(0.4, 0.1, 3)
    unjudged = Evaluation(answers=("a", "b", "c"), reference_answers=("x", "y", "z"), kl=kl)
    assert unjudged.prompts == 3 and not unjudged.judged
    assert math.isnan(unjudged.mean_reward) and math.isnan(unjudged.win_rate)
    judged = Evaluation(
        ("a", "b", "c"), ("x", "y", "z"), kl, rewards=(1.0, 2.0, 0.0), reference_rewards=(0.0, 2.0, 1.0)
    )
    assert judged.mean_reward == 1.0 and judged.reference_mean_reward == 1.0 and judged.reward_gain == 0.0
    assert judged.win_rate == pytest.approx((1 + 0.5 + 0) / 3)
    assert judged.reward_gain_stderr == pytest.approx(float(torch.tensor([1.0, 0.0, -1.0]).std()) / math.sqrt(3))


def test_answers_are_judged_by_the_scorer_against_their_prompts() -> None:
    prompts = [[{"role": "user", "content": "2+2?"}], [{"role": "user", "content": "3+3?"}]]
    scorer = checked(lambda prompt, response: float(len(response) + len(prompt[-1]["content"])), "length")
    assert judge_answers(scorer, prompts, ["4", "six"]) == [5.0, 7.0]


def test_win_rate_counts_ties_as_half() -> None:
    rewards = [3.0, -1.0, 0.0, 2.0]
    assert win_rate(rewards, rewards) == 0.5  # any model against itself
    assert win_rate([3.0, 1.0, 0.0], [1.0, 1.0, 2.0]) == pytest.approx((1 + 0.5 + 0) / 3)
    assert win_rate([2.0, 2.0], [1.0, -9.0]) == 1.0
    with pytest.raises(ValueError):
        win_rate([], [])


def test_response_logps_sum_the_response_tokens_whatever_the_padding(tiny: Path) -> None:
    model = load_hf_model(tiny)
    prompt = prompt_ids(tiny, "What is 2 plus 3?")
    samples = [SampledResponse(prompt, [40, 41, 42]), SampledResponse(prompt[:-2], [7]), SampledResponse(prompt, [])]
    batched = response_logps(model, samples, pad_token_id=0, batch_size=3)
    by_hand = [
        sum(float(next_token_logps(model, s.prompt_ids + s.response_ids[:t])[y]) for t, y in enumerate(s.response_ids))
        for s in samples
    ]
    assert batched.tolist() == pytest.approx(by_hand, abs=1e-5)
    assert batched[2] == 0.0  # no response tokens, nothing to sum


def test_kl_of_a_model_to_itself_is_zero(tiny: Path) -> None:
    model = load_hf_model(tiny)
    prompt = prompt_ids(tiny, "Hi, I am Ben.")
    samples = [SampledResponse(prompt, [(7 * i + 3) % 500 + 5 for i in range(k)]) for k in range(1, 9)]
    estimate = kl_estimate(model, model, samples, pad_token_id=0)
    assert (estimate.mean, estimate.stderr, estimate.samples) == (0.0, 0.0, 8)


def test_kl_estimate_converges_to_the_exact_kl_on_one_token_answers(tiny: Path) -> None:
    # With one-token answers KL(pi || pi_ref) is a sum over the vocabulary, computable exactly; the
    # estimator on answers sampled from pi must land within a few standard errors of it.
    # The random tiny model is nearly uniform; a sharpened copy (output head x 20) is far from it.
    policy, reference = load_hf_model(tiny), load_hf_model(tiny)
    with torch.no_grad():
        policy.lm_head.weight.mul_(20.0)
    prompt = prompt_ids(tiny, "What colour is a blorb?")
    p_logps, q_logps = next_token_logps(policy, prompt), next_token_logps(reference, prompt)
    exact = float((p_logps.exp() * (p_logps - q_logps)).sum())
    draws = torch.multinomial(p_logps.exp(), 4000, replacement=True, generator=torch.Generator().manual_seed(0))
    estimate = kl_estimate(policy, reference, [SampledResponse(prompt, [int(y)]) for y in draws], 0, batch_size=500)
    assert exact > 0.5  # a KL worth estimating
    assert abs(estimate.mean - exact) < 4 * estimate.stderr
    assert estimate.stderr < exact / 5


def test_a_lora_adapter_is_evaluated_merged_into_its_base(tiny: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    adapter = random_lora(tiny, tmp_path / "adapter", seed=2)
    merged_dir = full_weights_dir(adapter, tmp_path / "merged")
    assert full_weights_dir(tiny, tmp_path / "unused") == tiny  # full weights are used where they are
    ids = torch.tensor([prompt_ids(tiny, "Add 2 and 9.")])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(load_hf_model(tiny), str(adapter)).eval()(input_ids=ids).logits
        merged = load_hf_model(merged_dir)(input_ids=ids).logits
        base = load_hf_model(tiny)(input_ids=ids).logits
    assert torch.allclose(merged, expected, atol=1e-5)
    assert not torch.allclose(merged, base, atol=1e-3)
    assert AutoTokenizer.from_pretrained(merged_dir).eos_token_id == AutoTokenizer.from_pretrained(tiny).eos_token_id


@pytest.mark.integration
def test_vllm_answers_and_weight_swaps_agree_with_transformers(
    default_model_config: TrimtabConfig, vllm_engine: Any, tmp_path: Path
) -> None:
    default = default_model_config.model.path
    held_out = heldout_prompts(World(default_model_config.world), 16, seed=5)
    prompts = messages_of(held_out)
    other = perturbed_copy(default, tmp_path / "other", seed=5, scale=0.1)
    before = greedy_answers(vllm_engine, prompts)
    try:
        load_weights(vllm_engine, other)
        swapped = greedy_answers(vllm_engine, prompts)
        samples = sample_responses(vllm_engine, prompts, seed=0)
    finally:
        load_weights(vllm_engine, default)  # the engine is shared: leave it as it was
    assert greedy_answers(vllm_engine, prompts) == before

    tokenizer = AutoTokenizer.from_pretrained(default)
    policy = load_hf_model(other)
    with torch.no_grad():
        hf_greedy = sample_with_hf(policy, tokenizer, prompts, temperature=0.0, seed=0)
    assert swapped == hf_greedy
    assert swapped != before
    # Samples are the engine's exact token ids: the templated prompt, then the answer and end-of-turn.
    assert all(s.prompt_ids == prompt_ids(default, p.text) for s, p in zip(samples, held_out, strict=True))
    assert sum(s.response_ids[-1] == tokenizer.eos_token_id for s in samples) >= 12
    assert kl_estimate(policy, policy, samples, 0).mean == 0.0
    kl = kl_estimate(policy, load_hf_model(default), samples, 0)
    # A Monte Carlo estimate of a small KL: positive in expectation, within noise of it on 16 samples.
    assert math.isfinite(kl.stderr) and kl.stderr > 0 and kl.mean > -3 * kl.stderr
