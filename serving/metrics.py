"""The serving tier's OpenTelemetry instruments (no-ops unless telemetry is configured)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, UpDownCounter


@dataclass(frozen=True)
class ServingMetrics:
    requests: Counter
    tokens: Counter
    ttft: Histogram
    inter_token: Histogram
    inflight: UpDownCounter
    swaps: Counter
    swap_stall: Histogram
    dropped_records: Counter

    @classmethod
    def create(cls) -> ServingMetrics:
        meter = metrics.get_meter("trimtab.serving")
        return cls(
            requests=meter.create_counter("trimtab.serving.requests", description="Requests by outcome and version"),
            tokens=meter.create_counter("trimtab.serving.tokens", unit="{token}", description="Completion tokens"),
            ttft=meter.create_histogram("trimtab.serving.ttft", unit="s", description="Time to first token"),
            inter_token=meter.create_histogram(
                "trimtab.serving.inter_token_latency", unit="s", description="Time between streamed deltas"
            ),
            inflight=meter.create_up_down_counter("trimtab.serving.inflight", description="Requests in flight"),
            swaps=meter.create_counter("trimtab.serving.swaps", description="Weight swaps by outcome"),
            swap_stall=meter.create_histogram("trimtab.serving.swap_stall", unit="s", description="Swap stall"),
            dropped_records=meter.create_counter(
                "trimtab.serving.dropped_records", description="Response records dropped (sink buffer full)"
            ),
        )
