"""OpenTelemetry set-up: where traces and metrics go."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from trimtab.config.base import Section


class TelemetryConfig(Section):
    """Tracing and metrics exporters for every trimtab process."""

    service_name: str = Field(default="trimtab", description="service.name resource attribute prefix.")
    traces: Literal["off", "console", "otlp"] = Field(
        default="off", description="Where spans go: nowhere, stderr, or an OTLP/gRPC collector."
    )
    metrics: Literal["off", "console", "otlp", "prometheus"] = Field(
        default="off", description="Where metrics go; 'prometheus' serves /metrics on prometheus_port."
    )
    events: Literal["off", "console", "otlp"] = Field(
        default="off",
        description="Where events go (each accepted feedback as gen_ai.evaluation.result): nowhere, stderr, OTLP.",
    )
    otlp_endpoint: str = Field(
        default="http://127.0.0.1:4317", description="OTLP/gRPC collector endpoint for traces, metrics and events."
    )
    prometheus_host: str = Field(default="127.0.0.1", description="Bind address of the /metrics endpoint.")
    prometheus_port: int = Field(default=9464, ge=0, le=65535, description="Port of the /metrics endpoint.")
    sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, description="Share of root traces sampled (children follow their parent)."
    )
    export_interval_ms: int = Field(
        default=10_000, ge=100, description="How often periodic metric readers export (console/otlp)."
    )
