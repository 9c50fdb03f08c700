"""From examples to padded tensors: tokenisation with prompt masking, and length-bucketed batches."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

Messages = Sequence[dict[str, str]]

# Batches are cut from windows of this many batches sorted by length: padding nearly vanishes while
# the order stays random at the window scale.
BUCKET_WINDOW_BATCHES = 50


@dataclass(frozen=True)
class TokenizedExample:
    """One training sequence; `loss_mask[t]` is 1 where token t is a response token."""

    input_ids: list[int]
    loss_mask: list[int]

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class Batch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    loss_mask: torch.Tensor  # (B, T-1), aligned with the targets input_ids[:, 1:]

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def to(self, device: torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_mask.to(device))


def tokenize_chat(tokenizer: PreTrainedTokenizerBase, messages: Messages, response: str) -> TokenizedExample:
    """Prompt rendered with the model's chat template (masked), then the response and end-of-turn."""
    prompt_ids = _chat_ids(tokenizer, messages)
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids, tokenizer.eos_token_id]
    return TokenizedExample(prompt_ids + response_ids, [0] * len(prompt_ids) + [1] * len(response_ids))


def _chat_ids(tokenizer: PreTrainedTokenizerBase, messages: Messages) -> list[int]:
    rendered: Any = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    return list(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def length_bucketed(
    examples: Sequence[TokenizedExample], batch_size: int, rng: random.Random
) -> Iterator[list[TokenizedExample]]:
    """Batches of similar length, in random order; every example appears exactly once."""
    order = list(examples)
    rng.shuffle(order)
    window = batch_size * BUCKET_WINDOW_BATCHES
    batches: list[list[TokenizedExample]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=len)
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    yield from batches


def collate(examples: Sequence[TokenizedExample], pad_token_id: int) -> Batch:
    width = max(len(example) for example in examples)
    input_ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(examples), width), dtype=torch.float32)
    for row, example in enumerate(examples):
        n = len(example)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        attention_mask[row, :n] = 1
        loss_mask[row, :n] = torch.tensor(example.loss_mask, dtype=torch.float32)
    return Batch(input_ids, attention_mask, loss_mask[:, 1:])
