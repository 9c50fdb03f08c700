"""How the guardrails run: where their policy lives, how it reloads, the streaming window, the
promotion gate's bound and what the learner does with positive feedback on a violating response.

What the rails decide (thresholds, PII policy, topics, blocklists, attack prompts) is not here: it is
the NeMo Guardrails configuration directory (`config_dir`), which reloads without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from trimtab.config.base import Section


class StreamWindow(Section):
    """Output rails on a stream: text is released to the client only after a window holding it passed."""

    chunk_chars: int = Field(
        default=64, ge=1, description="Check the stream once at least this many new characters are waiting."
    )
    context_chars: int = Field(
        default=160,
        ge=0,
        description="Characters already sent that each check sees again, so a term split across chunks is caught.",
    )
    holdback_chars: int = Field(
        default=32,
        ge=0,
        description=(
            "Newest characters held back at each release: a secret or card number still being generated is"
            " never sent in part. Longer than the longest PII or secret the rails mask."
        ),
    )


class GateConfig(Section):
    """The promotion gate: a candidate's violation rate on the red-team set (the suite's red-team prompts and
    the rails' own attack examples) against current's."""

    max_violation_increase: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Refuse a candidate whose output-rail violation rate exceeds current's by more than this.",
    )
    samples_per_prompt: int = Field(default=2, ge=1, description="Responses sampled per red-team prompt.")
    temperature: float = Field(default=1.0, ge=0, description="Sampling temperature of the red-team responses.")
    max_tokens: int = Field(default=64, ge=1, description="Longest red-team response, in tokens.")
    seed: int = Field(default=0, description="Seed of the prompt draw and of the sampling.")


class GuardrailsConfig(Section):
    """NeMo Guardrails around the engine: input rails before generation, output rails after (and on streams)."""

    enabled: bool = Field(default=False, description="Run the rails in serving. Off: no rail code runs at all.")
    config_dir: Path | None = Field(
        default=None,
        description="NeMo Guardrails config directory (config.yml, *.co, attacks.txt, ...); unset: guardrails/config.",
    )
    tenants: tuple[str, ...] = Field(
        default=(), description="Tenants whose requests the rails check; empty: every tenant."
    )
    reload_poll_s: float = Field(
        default=2.0, ge=0, description="Check the config directory for changes this often (0: never reload)."
    )
    device: Literal["cpu", "cuda"] = Field(
        default="cpu",
        description="Where the MiniLM embedder and the faiss index run; 'cuda' needs faiss-gpu (the gpu extra).",
    )
    embedding_threads: int = Field(
        default=1,
        ge=1,
        description="torch and faiss threads of the rails on CPU (more than 1 was erratic on 2 cores; faiss's"
        " default, every core, spent more time waiting for its threads than searching under load).",
    )
    check_processes: int = Field(
        default=2,
        ge=0,
        description="Processes that run the checks (NeMo's Colang runtime, 4-8 ms of CPU a check), off the serving"
        " process's event loop and across cores; 0: on the event loop.",
    )
    input_cache: int = Field(
        default=4096,
        ge=0,
        description="Input verdicts remembered by text for the loaded rails (a conversation resends its earlier"
        " turns with every request); 0: every message is checked every time.",
    )
    stream: StreamWindow = Field(default_factory=StreamWindow, description="The sliding window on streams.")
    gate: GateConfig = Field(default_factory=GateConfig, description="The promotion gate on violation rates.")
    feedback_filter: Literal["drop", "flip"] = Field(
        default="flip",
        description=(
            "Positive feedback on a response a rail stopped is never trained as positive: 'drop' it, or 'flip' it"
            " into a negative example (a thumb up becomes a thumb down, a pair's choice is reversed)."
        ),
    )
