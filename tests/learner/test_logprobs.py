"""Token log-probs take the LM head only where a scored token is predicted (learner.logprobs): from the first
position any row scores, for plain padded batches and packed pairs, the same numbers as the full head; models
whose forward does not take `logits_to_keep` get the full head."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoModelForCausalLM

from learner.batching import TokenizedExample, collate, collate_pairs
from learner.logprobs import (
    batch_token_logprobs,
    first_scored,
    first_source,
    pair_sequence_logprobs,
    pair_token_logprobs,
    sequence_token_logprobs,
    takes_logits_to_keep,
    token_logprobs,
)
from tests.learner.tiny import make_tiny_model

PAD = 0


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> nn.Module:
    directory = make_tiny_model(tmp_path_factory.mktemp("logprobs") / "model")
    return AutoModelForCausalLM.from_pretrained(Path(directory), dtype=torch.float32)


def pairs_with_prompts(*prompt_lengths: int) -> list[tuple[TokenizedExample, TokenizedExample]]:
    generator = torch.Generator().manual_seed(1)

    def tokens(n: int) -> list[int]:
        return torch.randint(1, 300, (n,), generator=generator).tolist()

    pairs = []
    for i, length in enumerate(prompt_lengths):
        prompt, chosen, rejected = tokens(length), tokens(3 + i), tokens(5)
        pairs.append(
            (
                TokenizedExample(prompt + chosen, [0] * length + [1] * len(chosen)),
                TokenizedExample(prompt + rejected, [0] * length + [1] * len(rejected)),
            )
        )
    return pairs


class HeadWidths:
    """The sequence length of every input the model's LM head sees."""

    def __init__(self, model: nn.Module) -> None:
        self.seen: list[int] = []
        self._handle = model.get_output_embeddings().register_forward_hook(self._record)

    def _record(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        self.seen.append(inputs[0].shape[1])

    def close(self) -> None:
        self._handle.remove()


def test_the_first_scored_position_is_read_on_the_host() -> None:
    assert first_scored(torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 1.0, 0.0]])) == 1
    assert first_scored(torch.zeros(2, 3)) == 0
    packed = collate_pairs(pairs_with_prompts(6, 4), PAD)
    assert packed is not None
    assert first_source(packed) == 3  # the shorter prompt's last position predicts its first response token


def test_a_padded_batch_takes_the_head_from_its_first_scored_position_only(tiny_model: nn.Module) -> None:
    sequences = [chosen for chosen, _ in pairs_with_prompts(6, 9, 7)]
    batch = collate(sequences, PAD)
    widths = HeadWidths(tiny_model)
    with torch.no_grad():
        trimmed, mask = batch_token_logprobs(tiny_model, batch)
        full = sequence_token_logprobs(tiny_model, batch.input_ids, batch.attention_mask)
    widths.close()
    width = batch.input_ids.shape[1]
    assert widths.seen == [width - 5, width]  # the first scored target is token 6, predicted at position 5
    assert torch.allclose(trimmed * mask, full * mask, atol=1e-5)
    assert trimmed[:, :5].eq(0).all()


def test_log_probs_at_a_sampling_temperature_are_those_of_the_scaled_full_logits(tiny_model: nn.Module) -> None:
    batch = collate([chosen for chosen, _ in pairs_with_prompts(6, 9)], PAD)
    first = first_scored(batch.loss_mask)
    with torch.no_grad():
        trimmed = sequence_token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, first, temperature=0.7)
        logits = tiny_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    full = token_logprobs(logits / 0.7, batch.input_ids)
    assert torch.allclose(trimmed * batch.loss_mask, full * batch.loss_mask, atol=1e-5)


def test_packed_pairs_take_the_head_from_their_first_response_only(tiny_model: nn.Module) -> None:
    pairs = pairs_with_prompts(8, 5, 6)
    packed = collate_pairs(pairs, PAD)
    assert packed is not None
    widths = HeadWidths(tiny_model)
    with torch.no_grad():
        trimmed, mask = pair_sequence_logprobs(tiny_model, pairs, PAD)
        full = pair_token_logprobs(tiny_model, packed)
    widths.close()
    width = packed.input_ids.shape[1]
    assert widths.seen == [width - 4, width]
    assert torch.allclose(trimmed * mask, full * mask, atol=1e-5)


def test_gradients_through_the_trimmed_head_are_the_full_heads(tiny_model: nn.Module) -> None:
    pairs = pairs_with_prompts(8, 5)
    packed = collate_pairs(pairs, PAD)
    assert packed is not None
    grads = []
    for first in (first_source(packed), 0):
        tiny_model.zero_grad()
        (pair_token_logprobs(tiny_model, packed, first) * packed.loss_mask).sum().backward()
        grads.append([p.grad.clone() for p in tiny_model.parameters()])
    for trimmed, full in zip(*grads, strict=True):
        assert torch.allclose(trimmed, full, atol=1e-5)


def test_a_lora_model_passes_logits_to_keep_through(tmp_path: Path) -> None:
    directory = make_tiny_model(tmp_path / "model")
    lora = get_peft_model(
        AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"]),
    )
    assert takes_logits_to_keep(lora)
    batch = collate([chosen for chosen, _ in pairs_with_prompts(6, 7)], PAD)
    widths = HeadWidths(lora)
    with torch.no_grad():
        batch_token_logprobs(lora, batch)
    widths.close()
    assert widths.seen == [batch.input_ids.shape[1] - 5]


class WithoutLogitsToKeep(nn.Module):
    """A causal LM whose forward has no `logits_to_keep` (as some architectures' do not)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, use_cache: bool) -> object:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=use_cache)


def test_a_model_without_logits_to_keep_gets_the_full_head(tiny_model: nn.Module) -> None:
    plain = WithoutLogitsToKeep(tiny_model)
    assert not takes_logits_to_keep(plain)
    batch = collate([chosen for chosen, _ in pairs_with_prompts(6, 7)], PAD)
    with torch.no_grad():
        logps, mask = batch_token_logprobs(plain, batch)
        full = sequence_token_logprobs(tiny_model, batch.input_ids, batch.attention_mask)
    assert torch.allclose(logps * mask, full * mask, atol=1e-5)
