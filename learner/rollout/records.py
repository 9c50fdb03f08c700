"""What crosses between the trainer and its rollout engine: how to sample, and what was sampled."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """`n` answers per prompt at `temperature`, at most `max_tokens` each; prompt i's answers use the seeds
    seed + i * n .. seed + i * n + n - 1, so a draw is the same whatever the batch around it."""

    n: int
    temperature: float
    max_tokens: int
    seed: int


@dataclass(frozen=True)
class Rollout:
    """One sampled answer, as the exact token ids the engine saw and produced."""

    prompt: int  # the index of its conversation in the request
    prompt_ids: tuple[int, ...]  # the chat-templated prompt
    response_ids: tuple[int, ...]  # the sampled tokens, end-of-turn included when generated
    logprobs: tuple[float, ...]  # the engine's log-prob of each sampled token (after temperature)
    text: str  # the response decoded without special tokens
    truncated: bool  # cut at max_tokens, not ended by the model
