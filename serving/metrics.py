"""The serving tier's OpenTelemetry instruments (no-ops unless telemetry is configured)."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter, UpDownCounter
from opentelemetry.semconv._incubating.metrics.gen_ai_metrics import (
    GEN_AI_SERVER_REQUEST_DURATION,
    GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
    GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
)

from trimtab.telemetry import SLOW_BUCKETS_S

# The bucket boundaries the GenAI conventions advise for each (the SDK's default buckets start at 5 s).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


@dataclass(frozen=True)
class ServingMetrics:
    requests: Counter
    tokens: Counter
    request_duration: Histogram
    time_to_first_token: Histogram
    time_per_output_token: Histogram
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
            request_duration=meter.create_histogram(
                GEN_AI_SERVER_REQUEST_DURATION,
                unit="s",
                description="Admission to the last candidate's last token",
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
            ),
            time_to_first_token=meter.create_histogram(
                GEN_AI_SERVER_TIME_TO_FIRST_TOKEN,
                unit="s",
                description="Time to each candidate's first token",
                explicit_bucket_boundaries_advisory=TTFT_BUCKETS,
            ),
            time_per_output_token=meter.create_histogram(
                GEN_AI_SERVER_TIME_PER_OUTPUT_TOKEN,
                unit="s",
                description="Per candidate, time per output token after the first",
                explicit_bucket_boundaries_advisory=TPOT_BUCKETS,
            ),
            inflight=meter.create_up_down_counter("trimtab.serving.inflight", description="Requests in flight"),
            swaps=meter.create_counter("trimtab.serving.swaps", description="Weight swaps by outcome"),
            swap_stall=meter.create_histogram(
                "trimtab.serving.swap_stall",
                unit="s",
                description="Swap stall",
                explicit_bucket_boundaries_advisory=SLOW_BUCKETS_S,
            ),
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
