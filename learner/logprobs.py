"""Per-token log-probabilities of target sequences under a causal LM."""

from __future__ import annotations

import torch
from torch import nn


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
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return token_logprobs(logits, input_ids)
