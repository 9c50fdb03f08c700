"""Reference log-probs, computed once per example before training.

The policy at step 0 is the reference pi_ref, so a pass over the data before the first optimiser
step gives every log pi_ref(y|x) the DPO/IPO/KTO losses need; no second (reference) model is held in
memory during training. Each rank scores every world_size-th example with the sharded model, then a
sum over ranks hands everyone the full table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from learner.data import TrainExample
from learner.distributed import DistContext, all_reduce_sum, reshard
from learner.logprobs import pair_sequence_logprobs
from learner.objectives import summed_logps


@torch.no_grad()
def reference_logps(
    model: nn.Module,
    examples: Sequence[TrainExample],
    micro_batch_size: int,
    context: DistContext,
    pad_token_id: int,
) -> torch.Tensor:
    """Summed response log-probs under `model`, shape (N, sequences per example), float32 on CPU."""
    n_sequences = len(examples[0].sequences)
    table = torch.zeros(len(examples), n_sequences)
    # Scored in length order, so that each forward pads little; the table is filled by index anyway.
    mine = sorted(range(context.rank, len(examples), context.world_size), key=lambda i: len(examples[i]))
    # Every rank runs the same number of forwards (FSDP all-gathers in lockstep), the last ones
    # possibly on a stand-in example whose result is dropped.
    rounds = math.ceil(math.ceil(len(examples) / context.world_size) / micro_batch_size)
    for r in range(rounds):
        chunk = mine[r * micro_batch_size : (r + 1) * micro_batch_size]
        scored = chunk or [0]
        logps = _summed_logps(model, [examples[i] for i in scored], pad_token_id).float().cpu()
        if chunk:
            table[chunk] = logps
    reshard(model)
    return all_reduce_sum(table.to(context.device)).cpu()


def _summed_logps(model: nn.Module, examples: Sequence[TrainExample], pad_token_id: int) -> torch.Tensor:
    """(n, sequences per example); an example's two sequences (DPO's chosen and rejected, KTO's completion and
    mismatched completion) share their prompt, computed once in a packed row where the model allows it."""
    if len(examples[0].sequences) == 2:
        pairs = [(example.sequences[0], example.sequences[1]) for example in examples]
        token_logps, mask = pair_sequence_logprobs(model, pairs, pad_token_id)
        return (token_logps * mask).sum(-1).view(2, len(examples)).T
    sequences = [sequence for example in examples for sequence in example.sequences]
    return summed_logps(model, sequences, pad_token_id).view(len(examples), -1)
