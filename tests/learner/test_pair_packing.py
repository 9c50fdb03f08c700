"""Preference pairs packed one per row, the prompt computed once (batching.collate_pairs): the layout by hand,
and the same log-probs and gradients as the two separate padded sequences on a tiny Llama; widths rounded
up to a multiple (batching.width_multiple) change nothing but the padding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from learner.batching import CUDA_WIDTH_MULTIPLE, TokenizedExample, collate, collate_pairs, width_multiple
from learner.logprobs import pair_sequence_logprobs, pair_token_logprobs, sequence_token_logprobs, supports_pair_packing
from tests.learner.tiny import make_tiny_model

PAD = 0


def test_a_pair_is_one_row_whose_responses_see_the_prompt_and_themselves_only() -> None:
    chosen = TokenizedExample([1, 2, 3, 4], [0, 0, 1, 1])
    rejected = TokenizedExample([1, 2, 5], [0, 0, 1])
    batch = collate_pairs([(chosen, rejected)], PAD)
    assert batch is not None
    assert batch.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 3, 2]]  # the rejected response restarts after the prompt
    # Both first response tokens are predicted from the prompt's last position (1).
    assert batch.source.tolist() == [[1, 2], [1, 0]]
    assert batch.target.tolist() == [[3, 4], [5, PAD]]
    assert batch.loss_mask.tolist() == [[1.0, 1.0], [1.0, 0.0]]
    visible = batch.attention_mask[0, 0].int().tolist()
    assert visible[3] == [1, 1, 1, 1, 0]  # chosen token 2: prompt and chosen
    assert visible[4] == [1, 1, 0, 0, 1]  # rejected token: prompt and itself, never the chosen response


def test_pairs_with_different_prompts_are_not_packed() -> None:
    chosen = TokenizedExample([1, 2, 3], [0, 0, 1])
    rejected = TokenizedExample([1, 7, 3], [0, 0, 1])
    assert collate_pairs([(chosen, rejected)], PAD) is None


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> torch.nn.Module:
    directory = make_tiny_model(tmp_path_factory.mktemp("pairs") / "model")
    return AutoModelForCausalLM.from_pretrained(Path(directory), dtype=torch.float32)


def random_pairs(vocab: int, n: int = 5) -> list[tuple[TokenizedExample, TokenizedExample]]:
    generator = torch.Generator().manual_seed(0)

    def tokens(length: int) -> list[int]:
        return torch.randint(1, vocab, (length,), generator=generator).tolist()

    pairs = []
    for i in range(n):
        prompt, chosen, rejected = tokens(3 + i), tokens(2 + 2 * i), tokens(6 - i)
        mask = [0] * len(prompt)
        pairs.append(
            (
                TokenizedExample(prompt + chosen, mask + [1] * len(chosen)),
                TokenizedExample(prompt + rejected, mask + [1] * len(rejected)),
            )
        )
    return pairs


def test_packed_pairs_give_the_separate_sequences_log_probs_and_gradients(tiny_model: torch.nn.Module) -> None:
    assert supports_pair_packing(tiny_model)
    pairs = random_pairs(tiny_model.config.vocab_size)

    tiny_model.zero_grad()
    token_logps, mask = pair_sequence_logprobs(tiny_model, pairs, PAD)
    packed = (token_logps * mask).sum(-1)
    packed.sum().backward()
    packed_grads = [p.grad.clone() for p in tiny_model.parameters()]

    tiny_model.zero_grad()
    batch = collate([chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs], PAD)
    separate = (sequence_token_logprobs(tiny_model, batch.input_ids, batch.attention_mask) * batch.loss_mask).sum(-1)
    separate.sum().backward()

    assert torch.allclose(packed, separate, atol=1e-5)
    for packed_grad, parameter in zip(packed_grads, tiny_model.parameters(), strict=True):
        assert torch.allclose(packed_grad, parameter.grad, atol=1e-5)


def test_widths_rounded_up_to_a_multiple_change_no_log_prob(tiny_model: torch.nn.Module) -> None:
    pairs = random_pairs(tiny_model.config.vocab_size)
    exact, rounded = collate_pairs(pairs, PAD), collate_pairs(pairs, PAD, multiple=16)
    assert exact is not None and rounded is not None
    assert exact.input_ids.shape[1] % 16 != 0 and rounded.input_ids.shape[1] % 16 == 0
    assert rounded.attention_mask.shape[-1] == rounded.attention_mask.shape[-2] == rounded.input_ids.shape[1]
    with torch.no_grad():
        exact_logps, rounded_logps = pair_token_logprobs(tiny_model, exact), pair_token_logprobs(tiny_model, rounded)
    assert torch.allclose(exact_logps, rounded_logps, atol=1e-5)

    sequences = [chosen for chosen, _ in pairs]
    exact_batch, rounded_batch = collate(sequences, PAD), collate(sequences, PAD, multiple=16)
    assert rounded_batch.input_ids.shape[1] % 16 == 0
    with torch.no_grad():
        summed = [
            (sequence_token_logprobs(tiny_model, batch.input_ids, batch.attention_mask) * batch.loss_mask).sum(-1)
            for batch in (exact_batch, rounded_batch)
        ]
    assert torch.allclose(summed[0], summed[1], atol=1e-5)


def test_widths_are_rounded_on_cuda_only() -> None:
    assert width_multiple(torch.device("cuda", 0)) == CUDA_WIDTH_MULTIPLE
    assert width_multiple(torch.device("cpu")) == 1
