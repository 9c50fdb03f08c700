"""The LM head only where a scored token is predicted vs at every position (`learner.logprobs`).

A training forward needs the logits of the positions that predict response tokens; the prompt's others
are never scored. With a real vocabulary the head is a large share of a small model's step: SmolLM2-135M's
(576 x 49,152) is about a fifth of its forward's multiply-adds. Candidate: the model asked for the logits
from the first position any row scores (`logits_to_keep`), as the learner does; baseline: the same call
for every position. Both on the real model (`make real-model`), float32 on this machine's threads, on the
world's DPO pairs rendered with the model's own chat template (its system prompt included), timed as a
forward and backward of one micro-batch: packed pairs (DPO's layout) and a plain padded batch of the
chosen answers (KTO's and SFT's). The sides alternate `rounds` times; each side's fastest run counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from bench.learner import Row, world_rows
from bench.report import Comparison
from learner.batching import TokenizedExample, collate, collate_pairs, tokenize_chat
from learner.logprobs import first_scored, first_source, pair_token_logprobs, sequence_token_logprobs
from trimtab.config import TrimtabConfig

REAL_MODEL = Path(__file__).resolve().parent.parent / ".trimtab" / "models" / "smollm2-135m-instruct"


def bench_lm_head(config: TrimtabConfig, examples: int = 8, rounds: int = 3) -> list[Comparison]:
    if not (REAL_MODEL / "config.json").exists():
        raise SystemExit(f"bench lm_head: no model at {REAL_MODEL} (run `make real-model`)")
    torch.set_num_threads(config.learner.torch_threads or torch.get_num_threads())
    tokenizer = AutoTokenizer.from_pretrained(REAL_MODEL)
    model = AutoModelForCausalLM.from_pretrained(REAL_MODEL, dtype=torch.float32)

    def rendered(row: Row) -> tuple[TokenizedExample, TokenizedExample]:
        prompt = row["prompt"]
        return tokenize_chat(tokenizer, prompt, row["chosen"]), tokenize_chat(tokenizer, prompt, row["rejected"])

    pairs = [rendered(row) for row in world_rows(config, "dpo", examples)]
    packed = collate_pairs(pairs, tokenizer.pad_token_id)
    assert packed is not None, "a pair's two answers share their prompt"
    plain = collate([chosen for chosen, _ in pairs], tokenizer.pad_token_id)

    def pair_step(first: int) -> Callable[[], torch.Tensor]:
        return lambda: (pair_token_logprobs(model, packed, first) * packed.loss_mask).sum()

    def plain_step(first: int) -> Callable[[], torch.Tensor]:
        return lambda: (
            sequence_token_logprobs(model, plain.input_ids, plain.attention_mask, first) * plain.loss_mask
        ).sum()

    # Either way `first` is a row position: the logits at position t predict the token at t + 1.
    shapes = [
        ("DPO packed pairs", packed.input_ids.shape[1], first_source(packed), pair_step),
        ("KTO / SFT answers", plain.input_ids.shape[1], first_scored(plain.loss_mask), plain_step),
    ]
    rows = []
    for label, width, first, step in shapes:
        trimmed, full = _best_of(model, step(first), step(0), rounds)
        rows.append(
            Comparison(
                name=f"learner LM head, {label}: {examples} at width {width}, forward + backward",
                unit="s",
                candidate=f"logits from position {first} on (the first that predicts a scored token)",
                candidate_value=trimmed,
                baseline="logits at every position",
                baseline_value=full,
                higher_is_better=False,
                notes=f"SmolLM2-135M-Instruct (49,152-token vocabulary), float32, {torch.get_num_threads()} threads",
            )
        )
    return rows


def _best_of(
    model: nn.Module, candidate: Callable[[], torch.Tensor], baseline: Callable[[], torch.Tensor], rounds: int
) -> tuple[float, float]:
    """Each side's fastest forward + backward over `rounds` alternations, after one warm-up each."""
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds + 1):
        for side, loss in enumerate((candidate, baseline)):
            model.zero_grad(set_to_none=True)
            started = time.perf_counter()
            loss().backward()
            times[side].append(time.perf_counter() - started)
    return min(times[0][1:]), min(times[1][1:])
