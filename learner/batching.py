"""From examples to padded tensors: tokenisation with prompt masking, length-bucketed batches, and
preference pairs packed one per row so that chosen and rejected share their prompt's forward pass."""

from __future__ import annotations

import array
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

# cuDNN's attention (what SDPA runs on recent NVIDIA GPUs) builds an execution plan for every new input
# shape, tens of ms of CPU while the GPU waits, and caches it: widths that changed every step paid that
# at each step's first attention forward and backward (44-64 ms GPU-idle gaps in the 2026-12-04 H200
# profile, ../shared/gpu-check). Rounded up to this multiple, a run meets a handful of widths.
CUDA_WIDTH_MULTIPLE = 64


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


def width_multiple(device: torch.device) -> int:
    """What batch widths on `device` are rounded up to: `CUDA_WIDTH_MULTIPLE` on CUDA; 1 elsewhere, where
    padding is only extra work."""
    return CUDA_WIDTH_MULTIPLE if device.type == "cuda" else 1


def collate(examples: Sequence[TokenizedExample], pad_token_id: int, *, multiple: int = 1) -> Batch:
    """Right-padded to the longest example, rounded up to `multiple` tokens (`width_multiple`)."""
    ids = [example.input_ids for example in examples]
    input_ids = _padded(ids, pad_token_id, multiple)
    attention_mask = _padded([[1] * len(row) for row in ids], 0, multiple)
    loss_mask = _padded([example.loss_mask for example in examples], 0, multiple).float()
    return Batch(input_ids, attention_mask, loss_mask[:, 1:])


@dataclass(frozen=True)
class PairBatch:
    """B preference pairs packed one per row as [prompt, chosen response, rejected response, padding].

    The prompt is computed once for both responses: each response attends to the prompt and to its own
    earlier tokens, never to the other response, and its positions restart after the prompt, so every
    log-prob equals the one of the separate sequence [prompt, response]. Responses are indexed in the
    layout of `learner.losses.PairLogps`: rows 0..B-1 of `source`/`target`/`loss_mask` are the chosen
    responses, rows B..2B-1 the rejected ones.
    """

    input_ids: torch.Tensor  # (B, W) right-padded
    position_ids: torch.Tensor  # (B, W)
    segment: torch.Tensor  # (B, W) long: 0 prompt, 1 chosen, 2 rejected, -1 padding
    source: torch.Tensor  # (2B, L) long: the position in its pair's row whose logits predict the token
    target: torch.Tensor  # (2B, L) long: the token
    loss_mask: torch.Tensor  # (2B, L) float: 1 where the token counts (0 for padding)

    def to(self, device: torch.device) -> PairBatch:
        return PairBatch(*(tensor.to(device) for tensor in vars(self).values()))

    @property
    def attention_mask(self) -> torch.Tensor:
        """(B, 1, W, W) bool, True where query (dim 2) may attend to key (dim 3), built where the batch is: on a
        GPU from the (B, W) segments, instead of copying B x W x W booleans over from the host each step."""
        return _pair_attention(self.segment)


def shared_prompt_length(chosen: TokenizedExample, rejected: TokenizedExample) -> int:
    """Tokens of the prompt both sequences start with (every token before the first loss token), or 0 if
    they differ or a response token comes first (nothing predicts position 0)."""
    length = chosen.loss_mask.index(1) if 1 in chosen.loss_mask else len(chosen)
    same = rejected.loss_mask[:length] == [0] * length and rejected.input_ids[:length] == chosen.input_ids[:length]
    return length if same and length < len(rejected) and length < len(chosen) else 0


def collate_pairs(
    pairs: Sequence[tuple[TokenizedExample, TokenizedExample]], pad_token_id: int, *, multiple: int = 1
) -> PairBatch | None:
    """Pack each (chosen, rejected) pair into one row sharing the prompt (see PairBatch), rows padded to a
    multiple of `multiple` tokens; None when a pair does not share a prompt, and the caller must fall back
    to `collate`."""
    prompts = [shared_prompt_length(chosen, rejected) for chosen, rejected in pairs]
    if not all(prompts):
        return None
    ids: list[list[int]] = []
    positions: list[list[int]] = []
    segments: list[list[int]] = []  # 0 prompt, 1 chosen, 2 rejected; padding becomes -1
    sides: tuple[list[list[int]], ...] = ([], [], [])  # per response, chosen then rejected: source, target, mask
    for length, (chosen, rejected) in zip(prompts, pairs, strict=True):
        row, row_positions, row_segments = chosen.input_ids[:length], list(range(length)), [0] * length
        for segment, sequence in ((1, chosen), (2, rejected)):
            tokens = sequence.input_ids[length:]
            start = len(row)
            # The first response token is predicted from the prompt's last position, the others from their predecessor.
            sides[0].append([length - 1, *range(start, start + len(tokens) - 1)])
            sides[1].append(tokens)
            sides[2].append(sequence.loss_mask[length:])
            row = row + tokens
            row_positions += range(length, length + len(tokens))
            row_segments += [segment] * len(tokens)
        ids.append(row)
        positions.append(row_positions)
        segments.append(row_segments)
    # Responses were appended pair by pair (chosen, rejected); PairLogps wants all chosen rows first.
    source, target, mask = ([*side[0::2], *side[1::2]] for side in sides)
    return PairBatch(
        input_ids=_padded(ids, pad_token_id, multiple),
        position_ids=_padded(positions, 0, multiple),
        segment=_padded(segments, -1, multiple),
        source=_padded(source, 0),
        target=_padded(target, pad_token_id),
        loss_mask=_padded(mask, 0).float(),
    )


def _padded(rows: Sequence[Sequence[int]], fill: int, multiple: int = 1) -> torch.Tensor:
    """Right-padded (len(rows), longest row rounded up to `multiple`) long tensor."""
    width = -(-max(len(row) for row in rows) // multiple) * multiple
    # Filled as one flat int64 buffer: torch.tensor over Python lists, or a slice assignment per row,
    # costs several times more at these sizes (a step of a small model collates in its critical path).
    flat: list[int] = []
    for row in rows:
        flat += row
        flat += [fill] * (width - len(row))
    return torch.frombuffer(array.array("q", flat), dtype=torch.long).view(len(rows), width)


def _pair_attention(segment: torch.Tensor) -> torch.Tensor:
    """Causal attention within a segment and onto the prompt; padding attends to itself only (no empty rows)."""
    width, device = segment.shape[1], segment.device
    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    query, key = segment.unsqueeze(2), segment.unsqueeze(1)
    visible = causal & ((key == 0) | (key == query)) & (key >= 0)
    return (visible | torch.eye(width, dtype=torch.bool, device=device)).unsqueeze(1)
