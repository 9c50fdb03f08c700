"""An operator sees the online learner: each round is a span linked to the feedback it read (so a trace
runs from a served request through its feedback to the version that learned from it), with a child span
per phase, and metrics say what was read, skipped, trained and published, and how stale the feedback was
(real broker, real Redis, one in-process rank, the tiny model)."""

from __future__ import annotations

import io
import math
import re
import signal
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanContext
from rich.console import Console

from learner.online.loop import OnlineRequest, run_online
from learner.online.telemetry import LearnerTelemetry
from tests.learner.online_support import feedback, small_learner_env
from tests.learner.tiny import make_tiny_model
from tests.metrics import metric_points, series
from trimtab.app.stack.topics import ensure_topics
from trimtab.config import TrimtabConfig, load_config
from trimtab.events import event_producer, send_event
from trimtab.registry import Registry
from trimtab.v1 import feedback_pb2

AGE_S = 30  # how long before the round each event was accepted


def submitted_thumbs(config: TrimtabConfig, tracer_provider: TracerProvider, n: int) -> list[SpanContext]:
    """n thumbs, each sent under its own `feedback.Submit` span as the feedback service sends them (the
    last one over its user's training cap); the spans' contexts."""
    producer = event_producer(config.kafka, "test")
    tracer = tracer_provider.get_tracer("feedback-stand-in")
    submits = []
    for i in range(n):
        event = feedback(feedback_pb2.FeedbackLabel(thumb=feedback_pb2.THUMB_UP if i % 2 else feedback_pb2.THUMB_DOWN))
        event.user_id = f"user{i}"
        event.accepted_at.FromSeconds(int(time.time()) - AGE_S)
        event.abuse.over_training_cap = i == n - 1
        with tracer.start_as_current_span("feedback.Submit") as span:
            send_event(producer, config.kafka.topics.feedback.name, event.feedback_id, event).get(timeout=10)
        submits.append(span.get_span_context())
    producer.close()
    return submits


@pytest.mark.integration
def test_a_round_is_traced_to_the_feedback_it_read_and_counted(stack: TrimtabConfig, tmp_path: Path) -> None:
    config = load_config(
        path=None,
        environ=small_learner_env(stack, tmp_path, partitions=1)
        | {
            "TRIMTAB_LEARNER__ONLINE__ROUND__EXAMPLES": "9",
            "TRIMTAB_LEARNER__ONLINE__MAX_ROUNDS": "1",
            "TRIMTAB_LEARNER__ONLINE__STOP_WHEN_IDLE_S": "30",
        },
    )
    ensure_topics(config.kafka)
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    submits = submitted_thumbs(config, tracer_provider, 10)
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    telemetry = LearnerTelemetry(meter, tracer_provider.get_tracer("learner"))
    model = make_tiny_model(tmp_path / "model")
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    said = io.StringIO()
    try:
        memory = run_online(config, OnlineRequest(model), Console(file=said, width=400), telemetry)
    finally:  # the learner stops on SIGTERM/SIGINT; give pytest its handlers back
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])
    assert memory.rounds == 1

    finished = spans.get_finished_spans()
    (round_span,) = [s for s in finished if s.name == "learner.round"]
    assert {link.context.span_id for link in round_span.links} == {s.span_id for s in submits}
    version = Registry(config.registry.root).versions()[-1].id
    assert round_span.attributes is not None
    assert dict(round_span.attributes) == {
        "trimtab.round": 1,
        "trimtab.new_items": 9,
        "trimtab.version": version,
        "trimtab.gate.outcome": "gates_off",
    }
    phases = {s.name: s for s in finished if s.parent is not None and s.parent.span_id == round_span.context.span_id}
    assert set(phases) == {
        f"learner.{p}" for p in ("train_policy", "gather_weights", "export", "gate", "publish", "checkpoint")
    }

    assert metric_points(reader, "trimtab.learner.feedback_consumed") == {series(kind="thumb"): 10}
    assert metric_points(reader, "trimtab.learner.feedback_skipped") == {series(reason="over_training_cap"): 1}
    assert metric_points(reader, "trimtab.learner.items_trained") == {series(head="policy", algorithm="kto"): 9}
    assert metric_points(reader, "trimtab.learner.rounds") == {series(outcome="gates_off"): 1}
    assert metric_points(reader, "trimtab.learner.backlog") == {(): 0}
    losses = metric_points(reader, "trimtab.learner.loss")  # the feedback's KTO and the anchors' SFT
    assert set(losses) == {series(head="policy", algorithm=a) for a in ("kto", "sft")}
    assert all(math.isfinite(loss) for loss in losses.values())
    assert metric_points(reader, "trimtab.learner.feedback_age") == {(): 9}
    age_sum = metric_points(reader, "trimtab.learner.feedback_age", histogram="sum")[()]
    assert AGE_S * 9 <= age_sum < (AGE_S + 300) * 9
    assert metric_points(reader, "trimtab.learner.phase_duration")[series(phase="train_policy")] == 1
    # The console says where the round's time went, phase by phase in order, each within the whole.
    line = re.search(r"round 1: (\d+\.\d) s \((.*)\)", said.getvalue())
    assert line is not None, said.getvalue()
    phases = {name: float(seconds) for name, seconds in (part.split(" ") for part in line.group(2).split(", "))}
    assert list(phases) == ["train_policy", "gather_weights", "export", "gate", "publish", "checkpoint"]
    assert sum(phases.values()) <= float(line.group(1)) + 0.3  # each printed rounded to 0.1 s


def test_a_gated_rounds_numbers_and_the_kl_bound_are_exported_for_alerts() -> None:
    reader = InMemoryMetricReader()
    telemetry = LearnerTelemetry(MeterProvider(metric_readers=[reader]).get_meter("test"))
    gate = {"gate/candidate_kl": 9.5, "gate/max_kl": 8.0, "gate/candidate_reward": math.nan}
    telemetry.round_done("ver_x", "refused", [], gate)
    # NaN (not judged) is left out: an alert must not compare it.
    assert metric_points(reader, "trimtab.learner.gate") == {
        series(metric="candidate_kl"): 9.5,
        series(metric="max_kl"): 8.0,
    }
    assert metric_points(reader, "trimtab.learner.rounds") == {series(outcome="refused"): 1}
