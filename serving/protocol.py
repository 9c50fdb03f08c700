"""The interface between the gRPC tier and the engine that generates (vLLM's AsyncLLM in production).

The servicers depend on this protocol, not on vLLM, so the request path reads in its own terms and
the engine's swap contract (pause -> reload -> stamp the version -> resume) lives in one place.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

PauseMode = Literal["keep", "wait"]


@dataclass(frozen=True)
class Sampling:
    """Validated sampling parameters for one candidate."""

    temperature: float
    top_p: float
    top_k: int  # 0 = no top-k
    max_tokens: int
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class EngineRequest:
    request_id: str  # unique per candidate: the response_id
    prompt_token_ids: Sequence[int]
    sampling: Sampling
    adapter: str | None = None  # a loaded LoRA adapter's name; None = the base weights
    # True: deltas as tokens arrive (streams). False: one delta with the whole completion when it ends,
    # which spares a wake-up of the request's task per token (unary calls).
    stream: bool = True
    # Also report, for each new token, the top_logprobs likeliest tokens there (the OpenAI API's
    # top_logprobs); 0 = the sampled token's logprob alone.
    top_logprobs: int = 0


@dataclass(frozen=True)
class VersionSpan:
    """Completion tokens [start, end) were sampled by the weights labelled `version`."""

    version: str
    start: int
    end: int


@dataclass(frozen=True)
class EngineDelta:
    """New output of one request since its previous delta."""

    text: str
    token_ids: Sequence[int]
    logprobs: Sequence[float]  # of the sampled tokens, after temperature/top-k/top-p
    finish_reason: str | None = None  # set on the last delta: "stop", "length" or "abort"
    version_spans: Sequence[VersionSpan] = field(default_factory=tuple)  # set on the last delta
    # On the last delta, when the engine measured it: seconds from its receiving the request to the first
    # token (the time to first token of a request that does not stream).
    first_token_s: float | None = None
    # With EngineRequest.top_logprobs: per new token, the likeliest (token id, logprob) pairs, best first.
    top_logprobs: Sequence[Sequence[tuple[int, float]]] = ()


class EngineStopped(Exception):
    """The engine died (its process failed): nothing this replica serves can succeed any more."""


class Engine(Protocol):
    """What serving needs from a generation engine. `generate` raises EngineStopped once it has died."""

    def render_chat(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def encode(self, text: str) -> list[int]: ...

    def token_texts(self, token_ids: Sequence[int]) -> list[str]: ...

    def generate(self, request: EngineRequest) -> AsyncGenerator[EngineDelta, None]: ...

    async def swap_weights(self, weights_dir: Path, version: str, mode: PauseMode) -> float: ...

    async def add_adapter(self, name: str, path: Path) -> None: ...

    async def remove_adapter(self, name: str) -> None: ...

    def shutdown(self) -> None: ...
