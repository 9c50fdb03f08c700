"""The guardrails' OpenTelemetry instruments (no-ops unless telemetry is configured).

trimtab.guardrails.decisions      counter    rail, stage, action, reason (one per rail per check)
trimtab.guardrails.checks         counter    stage, action (the check's overall outcome)
trimtab.guardrails.check_latency  histogram  stage; seconds per check, NeMo runtime included
trimtab.guardrails.reloads        counter    ok ("true" / "false": the new config was refused)
trimtab.guardrails.process_exits  counter    a check process that died (its checks blocked; it is started again)
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry import metrics
from opentelemetry.metrics import Counter, Histogram, Meter

from guardrails.decisions import CheckResult, Stage
from trimtab.telemetry import FAST_BUCKETS_S


@dataclass(frozen=True)
class GuardrailMetrics:
    decisions: Counter
    checks: Counter
    check_latency: Histogram
    reloads: Counter
    process_exits: Counter

    @classmethod
    def create(cls, meter: Meter | None = None) -> GuardrailMetrics:
        meter = meter or metrics.get_meter("trimtab.guardrails")
        return cls(
            decisions=meter.create_counter("trimtab.guardrails.decisions", description="Rail decisions"),
            checks=meter.create_counter("trimtab.guardrails.checks", description="Checks by overall outcome"),
            check_latency=meter.create_histogram(
                "trimtab.guardrails.check_latency",
                unit="s",
                description="Seconds per check",
                explicit_bucket_boundaries_advisory=FAST_BUCKETS_S,
            ),
            reloads=meter.create_counter("trimtab.guardrails.reloads", description="Config reloads by outcome"),
            process_exits=meter.create_counter(
                "trimtab.guardrails.process_exits", description="Check processes that died (started again)"
            ),
        )

    def checked(self, stage: Stage, result: CheckResult, seconds: float) -> None:
        self.checks.add(1, {"stage": stage.value, "action": result.action.value})
        self.check_latency.record(seconds, {"stage": stage.value})
        for d in result.decisions:
            self.decisions.add(
                1, {"rail": d.rail, "stage": d.stage.value, "action": d.action.value, "reason": d.reason_code}
            )
