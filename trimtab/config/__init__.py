"""Typed configuration: one section per component, loaded from YAML plus TRIMTAB_ environment overrides.

    config = load_config()              # ./trimtab.yaml or $TRIMTAB_CONFIG, then the environment
    config.kafka.topics.feedback.name   # 'trimtab.feedback'

Defaults run everything locally; `trimtab config show` prints the effective values.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from trimtab.config.auth import AuthConfig
from trimtab.config.base import REVEAL_SECRETS, Section
from trimtab.config.demo import DemoConfig
from trimtab.config.engine import EngineConfig
from trimtab.config.feedback import FeedbackConfig
from trimtab.config.guardrails import GuardrailsConfig
from trimtab.config.learner import LearnerConfig, OptimConfig
from trimtab.config.loader import ConfigError, load_model, resolve_config_path
from trimtab.config.model import DefaultModelRecipe, ModelConfig
from trimtab.config.ops import OpsConfig
from trimtab.config.registry import RegistryConfig
from trimtab.config.reward_service import RewardServiceConfig, ServedRewardConfig
from trimtab.config.serving import ServingConfig
from trimtab.config.stack import KafkaConfig, RedisConfig, StackConfig, TopicSpec
from trimtab.config.suite import SuiteConfig
from trimtab.config.telemetry import TelemetryConfig
from trimtab.config.tls import TlsConfig
from trimtab.config.world import WorldConfig


class TrimtabConfig(Section):
    """The whole effective configuration; each component reads only its own sections."""

    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="The Kafka-protocol broker.")
    redis: RedisConfig = Field(default_factory=RedisConfig, description="The Redis for records and pointers.")
    stack: StackConfig = Field(default_factory=StackConfig, description="The local stack (`trimtab up`).")
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig, description="OpenTelemetry export.")
    suite: SuiteConfig = Field(
        default_factory=SuiteConfig, description="The evaluation suite: held-out, anchor and red-team sets, a judge."
    )
    world: WorldConfig = Field(
        default_factory=WorldConfig, description="The synthetic world (the simulation: demo, tests, benches)."
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="The served model / default recipe.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="vLLM engine settings.")
    learner: LearnerConfig = Field(default_factory=LearnerConfig, description="Learner device and optimiser.")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, description="The feedback service.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys and tenants (off by default).")
    tls: TlsConfig = Field(
        default_factory=TlsConfig, description="TLS and mutual TLS for every server (off by default)."
    )
    serving: ServingConfig = Field(default_factory=ServingConfig, description="The serving tier.")
    registry: RegistryConfig = Field(default_factory=RegistryConfig, description="Model versions and pointers.")
    reward_service: RewardServiceConfig = Field(
        default_factory=RewardServiceConfig, description="A reward model over gRPC (`trimtab reward`)."
    )
    guardrails: GuardrailsConfig = Field(default_factory=GuardrailsConfig, description="Input and output rails.")
    demo: DemoConfig = Field(default_factory=DemoConfig, description="The `make demo` harness and its users.")
    ops: OpsConfig = Field(default_factory=OpsConfig, description="The operators' page (`trimtab ops`).")


def handoff(config: TrimtabConfig) -> dict[str, Any]:
    """The config as JSON-able data for a child process: secrets in full (`config show` masks them)."""
    return config.model_dump(mode="json", context={REVEAL_SECRETS: True})


def load_config(path: Path | None = None, environ: Mapping[str, str] | None = None) -> TrimtabConfig:
    """The effective config, or ConfigError naming the key, its source and the reason."""
    return load_model(TrimtabConfig, path, environ)


__all__ = [
    "ConfigError",
    "DefaultModelRecipe",
    "DemoConfig",
    "EngineConfig",
    "FeedbackConfig",
    "GuardrailsConfig",
    "KafkaConfig",
    "LearnerConfig",
    "ModelConfig",
    "OpsConfig",
    "OptimConfig",
    "RedisConfig",
    "RegistryConfig",
    "RewardServiceConfig",
    "ServedRewardConfig",
    "ServingConfig",
    "StackConfig",
    "SuiteConfig",
    "TelemetryConfig",
    "TlsConfig",
    "TopicSpec",
    "TrimtabConfig",
    "WorldConfig",
    "handoff",
    "load_config",
    "resolve_config_path",
]
