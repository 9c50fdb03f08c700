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
    mine = list(range(context.rank, len(examples), context.world_size))
    # Every rank runs the same number of forwards (FSDP all-gathers in lockstep), the last ones
    # possibly on a stand-in example whose result is dropped.
    rounds = math.ceil(math.ceil(len(examples) / context.world_size) / micro_batch_size)
    for r in range(rounds):
        chunk = mine[r * micro_batch_size : (r + 1) * micro_batch_size]
        scored = chunk or [0]
        sequences = [sequence for i in scored for sequence in examples[i].sequences]
        logps = summed_logps(model, sequences, pad_token_id).float().cpu().view(len(scored), n_sequences)
        if chunk:
            table[chunk] = logps
    reshard(model)
    return all_reduce_sum(table.to(context.device)).cpu()
