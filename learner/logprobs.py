"""Per-token log-probabilities of target sequences under a causal LM.

Only the positions that predict a scored (response) token need the LM head: prompts take their share
of every sequence, and the head (hidden x vocabulary) is a large part of a small model's step; on a
GPU its full-vocabulary float32 logits are a large share of the step's casts and memory. So the model is asked
for the logits of the tail of each row that starts at the first position any row scores (Hugging Face's
`logits_to_keep`); earlier positions' log-probs come back as zeros, which every caller masks out.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn

from learner.batching import Batch, PairBatch, TokenizedExample, collate, collate_pairs, width_multiple


def token_logprobs(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """log p(x_t | x_<t) for t = 1..T-1, from logits of shape (B, T, V); returns shape (B, T-1).

    Computed as gathered logit minus logsumexp rather than a full log_softmax, which would
    materialise a second (B, T, V) tensor.
    """
    logits = logits[:, :-1].float()
    targets = input_ids[:, 1:].unsqueeze(-1)
    return logits.gather(-1, targets).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def sequence_token_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    first: int = 0,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Token log-probs of `input_ids` under `model` (of its logits / `temperature`), aligned with
    `input_ids[:, 1:]`: shape (B, T-1).

    `first`: the first target position (an index into `input_ids[:, 1:]`) the caller scores in any row
    (`first_scored`); the LM head skips the positions before it, whose log-probs are returned as 0.
    """
    logits, first = _logits_from(model, first, input_ids=input_ids, attention_mask=attention_mask)
    if temperature != 1.0:
        logits = logits / temperature
    token_logps = token_logprobs(logits, input_ids[:, first:])
    return nn.functional.pad(token_logps, (first, 0)) if first else token_logps


def batch_token_logprobs(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(token log-probs, loss mask) of a batch collated on the host, both on the model's device."""
    first = first_scored(batch.loss_mask)
    batch = batch.to(next(model.parameters()).device)
    return sequence_token_logprobs(model, batch.input_ids, batch.attention_mask, first), batch.loss_mask


def first_scored(loss_mask: torch.Tensor) -> int:
    """The first column of a (B, L) loss mask that any row scores (0 when none does). Read on the host,
    before the batch moves to its device, so it costs no device sync."""
    columns = loss_mask.any(dim=0).nonzero()
    return int(columns[0]) if len(columns) else 0


def pair_token_logprobs(model: nn.Module, batch: PairBatch, first: int = 0) -> torch.Tensor:
    """Token log-probs of the chosen and rejected responses of packed pairs (`batching.collate_pairs`),
    shape (2B, L) in the rows of `batch.target`: chosen first, then rejected.

    `first`: the lowest row position that predicts a scored token (`first_source`); the LM head runs from
    there on. The logsumexp is taken once per row position, then read at the positions that predict a
    response token; no (2B, L, V) copy of the logits is made.
    """
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "position_ids": batch.position_ids}
    logits, first = _logits_from(model, first, **inputs)
    logits = logits.float()
    rows = torch.arange(batch.input_ids.shape[0], device=logits.device).repeat(2).unsqueeze(-1)
    # Padding entries (source 0) would fall before `first`: any kept position serves, their mask is 0.
    source = (batch.source - first).clamp(min=0)
    return logits[rows, source, batch.target] - torch.logsumexp(logits, dim=-1)[rows, source]


def first_source(batch: PairBatch) -> int:
    """The lowest row position whose logits predict a scored token of a packed batch (on the host)."""
    scored = batch.source[batch.loss_mask > 0]
    return int(scored.min()) if len(scored) else 0


def takes_logits_to_keep(model: nn.Module) -> bool:
    """Whether the (possibly PEFT-wrapped) Hugging Face model's forward takes `logits_to_keep`."""
    get_base_model = getattr(model, "get_base_model", None)
    base = get_base_model() if callable(get_base_model) else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _logits_from(model: nn.Module, first: int, **inputs: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(logits, the row position they start at): from `first` on where the model's forward takes
    `logits_to_keep`, from 0 where it does not."""
    # No KV cache: nothing reads it, and under activation checkpointing a cache filled inside a block
    # would be filled again when the block is recomputed in the backward pass.
    if not takes_logits_to_keep(model):
        return model(**inputs, use_cache=False).logits, 0
    width = inputs["input_ids"].shape[1]
    return model(**inputs, use_cache=False, logits_to_keep=width - first).logits, first


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
        first = first_source(packed)
        packed = packed.to(device)
        return pair_token_logprobs(model, packed, first), packed.loss_mask
    sequences = [chosen for chosen, _ in pairs] + [rejected for _, rejected in pairs]
    return batch_token_logprobs(model, collate(sequences, pad_token_id, multiple=multiple))
