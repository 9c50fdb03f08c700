"""The serving tier's OpenTelemetry instruments (no-ops unless telemetry is configured)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter


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
    served_reward_sum: UpDownCounter
    served_reward_scored: Counter
    served_reward_failures: Counter

    @classmethod
    def create(cls, meter: Meter | None = None) -> ServingMetrics:
        meter = meter or metrics.get_meter("trimtab.serving")
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
            # A sum and a count, not a histogram: OpenTelemetry histograms take no negative values, and rewards
            # are signed. The mean reward of a version's answers is the ratio (over a window: of their rates).
            served_reward_sum=meter.create_up_down_counter(
                "trimtab.serving.served_reward_sum", description="Sum of the reward-model scores of scored answers"
            ),
            served_reward_scored=meter.create_counter(
                "trimtab.serving.served_reward_scored", description="Served answers scored by the reward model"
            ),
            served_reward_failures=meter.create_counter(
                "trimtab.serving.served_reward_failures", description="Sampled answers not scored, by reason"
            ),
        )
