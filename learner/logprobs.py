"""Per-token log-probabilities of target sequences under a causal LM."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from learner.batching import PairBatch, TokenizedExample, collate, collate_pairs, width_multiple


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1, from logits of shape (B, T, V); returns shape (B, T-1).

    Computed as gathered logit minus logsumexp rather than a full log_softmax, which would
    materialise a second (B, T, V) tensor.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Token log-probs of `input_ids` under `model`, aligned with `input_ids[:, 1:]`."""
    # No KV cache: nothing reads it, and under activation checkpointing a cache filled inside a block
    # would be filled again when the block is recomputed in the backward pass.
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return token_logprobs(logits, input_ids)


def pair_token_logprobs(model: nn.Module, batch: PairBatch) -> torch.Tensor:
    """Token log-probs of the chosen and rejected responses of packed pairs (`batching.collate_pairs`),
    shape (2B, L) in the rows of `batch.target`: chosen first, then rejected.

    The logsumexp is taken once per row position, then read at the positions that predict a response
    token; no (2B, L, V) copy of the logits is made.
    """
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    logits = model(**inputs, use_cache=False).logits.float()
    rows = torch.arange(batch.input_ids.shape[0], device=logits.device).repeat(2).unsqueeze(-1)
    return logits[rows, batch.source, batch.target] - torch.logsumexp(logits, dim=-1)[rows, batch.source]


def supports_pair_packing(model: nn.Module) -> bool:
    """Whether `model` takes PairBatch's custom boolean 4D attention mask as-is: Hugging Face models with SDPA
    attention and no sliding window (eager attention wants an additive float mask; flash attention none)."""
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) == "sdpa" and getattr(config, "sliding_window", None) is None


def pair_sequence_logprobs(
    model: nn.Module, pairs: Sequence[tuple[TokenizedExample, TokenizedExample]], pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs, loss mask) of B (chosen, rejected) pairs, each (2B, L): chosen rows, then rejected rows.

    Pairs that share their prompt are packed one per row (`batching.collate_pairs`) when the model takes
    the packed layout's attention mask: the prompt is computed once instead of twice and the rows are
    padded once per pair. Otherwise the 2B sequences are one padded batch. Either way the log-probs are
    the same up to float rounding.
    """
    device = next(model.parameters()).device
    multiple = width_multiple(device)
    packed = collate_pairs(pairs, pad_token_id, multiple=multiple) if supports_pair_packing(model) else None
    if packed is not None:
        packed = packed.to(device)
        return pair_token_logprobs(model, packed), packed.loss_mask
    sequences = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    batch = collate(sequences, pad_token_id, multiple=multiple).to(device)
    return sequence_token_logprobs(model, batch.input_ids, batch.attention_mask), batch.loss_mask
