"""SFT building blocks: the loss, prompt masking, batching and the tokenizer's conventions."""

from __future__ import annotations

import math
import random

import pytest
import torch

from learner.batching import TokenizedExample, collate, length_bucketed, tokenize_chat
from learner.logprobs import token_logprobs
from learner.losses import sft_loss
from trimtab.simulation.default_model.tokenizer import END, train_tokenizer
from trimtab.simulation.world import default_world


def test_sft_loss_is_the_token_mean_nll_of_response_tokens() -> None:
    # Two sequences: 2 and 1 counted tokens with probabilities 0.5, 0.25 and 0.125; the masked
    # position (probability 0.9) must not count.
    token_logps = torch.log(torch.tensor([[0.5, 0.25, 0.9], [0.125, 0.9, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    loss, metrics = sft_loss(token_logps, mask)
    expected = (math.log(2) + math.log(4) + math.log(8)) / 3  # = 2 ln 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert metrics["tokens"] == 3


def test_token_logprobs_match_log_softmax_gather() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 7, 11, generator=generator)
    ids = torch.randint(0, 11, (3, 7), generator=generator)
    reference = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(token_logprobs(logits, ids), reference, atol=1e-6)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    return train_tokenizer(default_world().corpus_text(n_examples=300, seed=1), vocab_size=512)


def test_tokenizer_splits_digits_and_renders_the_chat_template(tokenizer) -> None:  # type: ignore[no-untyped-def]
    pieces = tokenizer.tokenize("1234")
    assert [tokenizer.convert_tokens_to_string([p]) for p in pieces] == ["1", "2", "3", "4"]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hello!"}], add_generation_prompt=True, tokenize=False
    )
    assert rendered == "<|bos|><|user|>Hello!<|end|><|assistant|>"
    assert tokenizer.eos_token == END


def test_tokenized_example_masks_the_prompt_and_ends_with_end_of_turn(tokenizer) -> None:  # type: ignore[no-untyped-def]
    example = tokenize_chat(tokenizer, [{"role": "user", "content": "What is 3 plus 5?"}], "It is 8.")
    response_ids = tokenizer("It is 8.", add_special_tokens=False)["input_ids"]
    n_response = len(response_ids) + 1
    assert example.loss_mask == [0] * (len(example) - n_response) + [1] * n_response
    assert example.input_ids[-n_response:] == [*response_ids, tokenizer.eos_token_id]


def test_collate_pads_right_and_aligns_the_mask_with_shifted_targets() -> None:
    batch = collate([TokenizedExample([5, 6, 7], [0, 1, 1]), TokenizedExample([5, 6], [0, 1])], pad_token_id=0)
    assert batch.input_ids.tolist() == [[5, 6, 7], [5, 6, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch.loss_mask.tolist() == [[1.0, 1.0], [1.0, 0.0]]  # targets are input_ids[:, 1:]


def test_length_bucketing_keeps_every_example_once_and_reduces_padding() -> None:
    rng = random.Random(0)
    examples = [TokenizedExample([1] * n, [1] * n) for n in (rng.randint(5, 80) for _ in range(1000))]
    batches = list(length_bucketed(examples, 16, random.Random(1)))
    assert sorted(map(id, (e for b in batches for e in b))) == sorted(map(id, examples))
    padded = sum(max(map(len, b)) * len(b) for b in batches)
    shuffled = [examples[i : i + 16] for i in range(0, 1000, 16)]
    assert padded < 0.7 * sum(max(map(len, b)) * len(b) for b in shuffled)
