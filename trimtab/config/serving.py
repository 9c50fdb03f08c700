"""The serving tier's settings: the gRPC endpoint, request limits, the response log, hot-swap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trimtab.config.base import Section
from trimtab.config.reward_service import ServedRewardConfig


class OpenAIConfig(Section):
    """The OpenAI-compatible HTTP API beside the gRPC services: same engine, routing, guardrails and log."""

    enabled: bool = Field(default=True, description="Serve the OpenAI API (POST /v1/chat/completions and the rest).")
    port: int = Field(default=8000, ge=0, le=65535, description="HTTP port (0 picks a free one); host: serving.host.")
    model_name: str = Field(
        default="trimtab",
        min_length=1,
        description="The name clients put in `model` to be routed as usual (canary split); a version id pins it.",
    )
    feedback_address: str = Field(
        default="127.0.0.1:50052",
        description="The FeedbackService (host:port) that POST /v1/feedback forwards to; empty: no /v1/feedback.",
    )
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="Largest request body read (413 beyond).")


class RouterConfig(Section):
    """`trimtab route`: the user-hash router in front of two replica sets, for full-weight canaries (one
    engine holds one set of base weights, so a full-weight canary needs replicas of its own)."""

    host: str = Field(default="127.0.0.1", description="Bind address of the router's gRPC and HTTP ports.")
    port: int = Field(default=50050, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    http_port: int = Field(default=8080, ge=0, le=65535, description="OpenAI API port (0 picks a free one).")
    current: str = Field(
        default="127.0.0.1:50051",
        description=(
            "gRPC target of the replicas with serving.role current: host:port, or dns:///name:port to spread calls"
            " over every address the name resolves to."
        ),
    )
    current_http: str = Field(default="http://127.0.0.1:8000", description="Base URL of those replicas' OpenAI API.")
    canary: str = Field(default="127.0.0.1:50061", description="gRPC address of the replicas with serving.role canary.")
    canary_http: str = Field(default="http://127.0.0.1:8010", description="Base URL of those replicas' OpenAI API.")
    max_request_bytes: int = Field(default=1 << 20, ge=1024, description="Largest HTTP body forwarded (413 beyond).")


class ServingConfig(Section):
    """`trimtab serve`: InferenceService and AdminService over grpc.aio, vLLM's AsyncLLM in process."""

    host: str = Field(default="127.0.0.1", description="Bind address of the gRPC server.")
    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port (0 picks a free one).")
    version_poll_s: float = Field(
        default=5.0, gt=0, description="Re-read the registry pointers this often, in case a pub/sub message was missed."
    )
    max_prompt_chars: int = Field(default=8000, ge=1, description="Longest prompt text accepted, before tokenising.")
    max_prompt_tokens: int = Field(
        default=192,
        ge=1,
        description="Longest rendered prompt, in tokens (must leave room within engine.max_model_len).",
    )
    max_tokens_limit: int = Field(default=128, ge=1, description="Largest max_tokens a request may ask for.")
    default_max_tokens: int = Field(default=64, ge=1, description="max_tokens when a request leaves it unset.")
    max_candidates: int = Field(default=4, ge=1, description="Largest n (candidates per request).")
    max_stop_sequences: int = Field(default=4, ge=0, description="Most stop strings a request may give.")
    max_inflight: int = Field(
        default=256, ge=1, description="Requests generating or queued at once; beyond it: RESOURCE_EXHAUSTED."
    )
    response_ttl_s: int = Field(default=7 * 24 * 3600, ge=1, description="How long response records stay in Redis.")
    record_buffer: int = Field(
        default=10_000,
        ge=1,
        description="Response records held while Redis/Kafka are slow; beyond it they are dropped.",
    )
    record_retry_s: float = Field(default=1.0, gt=0, description="Wait between attempts to write a record.")
    record_linger_s: float = Field(
        default=0.1,
        ge=0,
        description="How long the response log's Kafka writer gathers records before a write: a produce round costs"
        " about a millisecond of CPU whatever it carries (the Redis record, which feedback reads, is not delayed).",
    )
    drain_grace_s: float = Field(
        default=10.0, ge=0, description="On SIGTERM: how long in-flight requests may finish before the server stops."
    )
    shutdown_timeout_s: float = Field(
        default=15.0,
        gt=0,
        description=(
            "On SIGTERM, beyond drain_grace_s: how long the rest of the stop (flushing the response log, stopping"
            " the engine) may take before the process writes its threads' stacks to stderr and exits 1."
        ),
    )
    pause_mode: Literal["keep", "wait"] = Field(
        default="keep",
        description=(
            "Hot-swap pause: 'keep' freezes in-flight requests and continues them on the new weights (one response"
            " may span two versions; recorded per token), 'wait' lets them finish on the old weights first."
        ),
    )
    cpu_cores_for_server: int = Field(
        default=1,
        ge=0,
        description=(
            "CPU backend only: cores vLLM leaves to this process (gRPC, tokenising, the response log). On 2 cores,"
            " 1 gave the tier 1.24x the throughput of 0: vLLM's threads otherwise fight the server for the CPU."
        ),
    )
    role: Literal["all", "current", "canary"] = Field(
        default="all",
        description=(
            "'all': serve current and adapter canaries, refuse a full-weight canary. Behind `trimtab route`:"
            " 'current' leaves full-weight canaries to the canary replicas; 'canary' serves a full-weight canary"
            " as its own weights (current while there is none)."
        ),
    )
    router: RouterConfig = Field(
        default_factory=RouterConfig, description="`trimtab route`, the router for full-weight canaries."
    )
    openai: OpenAIConfig = Field(
        default_factory=OpenAIConfig, description="The OpenAI-compatible HTTP API (chat, completions, feedback)."
    )
    served_reward: ServedRewardConfig = Field(
        default_factory=ServedRewardConfig,
        description="Score a share of served answers with a RewardService (the reward of served answers).",
    )
