"""Every check is counted in metrics (per rail decision, per outcome, latency) and visible as a span."""

from __future__ import annotations

import asyncio

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrails.decisions import Stage
from guardrails.metrics import GuardrailMetrics
from guardrails.runtime import Guardrails
from guardrails.semantic import Embedder
from guardrails.service import LiveGuardrails
from tests.metrics import metric_points, series
from trimtab.config import GuardrailsConfig
from trimtab.suite import ProtectedTerms


def test_checks_are_counted_timed_and_traced(rails: Guardrails, embedder: Embedder, protected: ProtectedTerms) -> None:
    reader, exporter = InMemoryMetricReader(), InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = GuardrailMetrics.create(MeterProvider(metric_readers=[reader]).get_meter("test"))
    live = LiveGuardrails(GuardrailsConfig(), rails, embedder, protected, meters, tracer_provider.get_tracer("test"))

    async def scenario() -> None:
        await live.check(Stage.INPUT, "What is 3 plus 5?")
        await live.check(Stage.INPUT, "My email is ana42@example.com. Hi.")
        await live.check(Stage.OUTPUT, "What a stupid question.", "Hi.")

    asyncio.run(scenario())
    decisions = metric_points(reader, "trimtab.guardrails.decisions")
    assert decisions[series(rail="pii", stage="input", action="modify", reason="pii.email")] == 1
    assert decisions[series(rail="pii", stage="input", action="allow", reason="")] == 1
    blocked = series(rail="blocklist", stage="output", action="block", reason="blocklist.term")
    assert decisions[blocked] == 1
    checks = metric_points(reader, "trimtab.guardrails.checks")
    assert checks[series(stage="input", action="allow")] == 1
    assert checks[series(stage="output", action="block")] == 1
    assert metric_points(reader, "trimtab.guardrails.check_latency")[series(stage="input")] == 2

    spans = exporter.get_finished_spans()
    assert [s.name for s in spans] == ["guardrails.input", "guardrails.input", "guardrails.output"]
    assert spans[1].attributes is not None and spans[1].attributes["trimtab.guardrails.action"] == "modify"
    assert list(spans[2].attributes["trimtab.guardrails.decisions"]) == ["blocklist:block:blocklist.term"]  # type: ignore[index]
