"""A step's rollouts as tensors: each answer after its templated prompt, right-padded, with the mask of its
response tokens and the engine's sampling log-probs at the same positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from learner.batching import TokenizedExample, collate
from learner.logprobs import first_scored, sequence_token_logprobs
from learner.rollout import Rollout


@dataclass(frozen=True)
class RolloutBatch:
    input_ids: torch.Tensor  # (B, L)
    attention_mask: torch.Tensor  # (B, L)
    mask: torch.Tensor  # (B, L-1): 1.0 where the target input_ids[:, 1:] is a response token
    engine_logps: torch.Tensor  # (B, L-1): the rollout engine's log-prob of each response token, 0 elsewhere
    first: int = 0  # the first target column any row scores (`learner.logprobs.first_scored`), read on the host

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: Sequence[int]) -> RolloutBatch:
        rows = torch.as_tensor(list(index), dtype=torch.long)
        # A subset of the rows scores nothing earlier than the whole batch: `first` still holds.
        return RolloutBatch(
            self.input_ids[rows], self.attention_mask[rows], self.mask[rows], self.engine_logps[rows], self.first
        )

    def to(self, device: torch.device) -> RolloutBatch:
        return RolloutBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.mask.to(device),
            self.engine_logps.to(device),
            self.first,
        )


def rollout_batch(rollouts: Sequence[Rollout], pad_token_id: int) -> RolloutBatch:
    examples = [
        TokenizedExample([*r.prompt_ids, *r.response_ids], [0] * len(r.prompt_ids) + [1] * len(r.response_ids))
        for r in rollouts
    ]
    batch = collate(examples, pad_token_id)
    engine_logps = torch.zeros_like(batch.loss_mask)
    for row, rollout in enumerate(rollouts):
        start = len(rollout.prompt_ids) - 1  # the target position of the first response token
        engine_logps[row, start : start + len(rollout.logprobs)] = torch.tensor(rollout.logprobs)
    first = first_scored(batch.loss_mask)
    return RolloutBatch(batch.input_ids, batch.attention_mask, batch.loss_mask, engine_logps, first)


def policy_logps(model: nn.Module, batch: RolloutBatch, temperature: float) -> torch.Tensor:
    """log pi(y_t | x, y_<t) of every target token at the sampling temperature (the engine's processed
    log-probs are log_softmax(logits / T): the ratio to them must be taken at the same T), (B, L-1)."""
    return sequence_token_logprobs(model, batch.input_ids, batch.attention_mask, batch.first, temperature=temperature)
