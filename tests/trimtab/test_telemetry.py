"""Telemetry: providers from config, and W3C trace context carried across real gRPC calls."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from concurrent import futures

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from tests.conftest import REPO, free_port
from trimtab.config import TelemetryConfig
from trimtab.errors import TrimtabError
from trimtab.telemetry import build_telemetry, context_from_grpc, context_from_kafka, grpc_metadata, kafka_headers

tracer = TracerProvider().get_tracer("test")


def test_off_builds_no_providers() -> None:
    telemetry = build_telemetry(TelemetryConfig(), "test")
    assert telemetry.tracer_provider is None and telemetry.meter_provider is None


def test_console_traces_export_spans_with_the_component_name() -> None:
    # In a child process: the console exporter binds sys.stdout when it is imported, before any capture.
    script = (
        "from trimtab.config import TelemetryConfig\n"
        "from trimtab.telemetry import setup_telemetry\n"
        "from opentelemetry import trace\n"
        "telemetry = setup_telemetry(TelemetryConfig(traces='console'), 'serving')\n"
        "with trace.get_tracer('t').start_as_current_span('generate'):\n"
        "    pass\n"
        "telemetry.shutdown()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert '"name": "generate"' in result.stdout and '"service.name": "trimtab-serving"' in result.stdout


def test_prometheus_endpoint_serves_recorded_metrics() -> None:
    port = free_port()
    telemetry = build_telemetry(TelemetryConfig(metrics="prometheus", prometheus_port=port), "feedback")
    assert telemetry.meter_provider is not None
    counter = telemetry.meter_provider.get_meter("t").create_counter("feedback_accepted", unit="1")
    counter.add(3, {"kind": "thumb"})
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'feedback_accepted_total{kind="thumb"' in body and "3.0" in body
    telemetry.shutdown()


def test_a_taken_prometheus_port_is_an_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(TrimtabError, match=f"telemetry.prometheus_port: .*:{port} .*PROMETHEUS_PORT"):
            build_telemetry(TelemetryConfig(metrics="prometheus", prometheus_port=port), "learner")


def test_kafka_headers_carry_the_current_span() -> None:
    with tracer.start_as_current_span("produce") as span:
        headers = kafka_headers()
    assert all(isinstance(value, bytes) for _, value in headers)
    carried = trace.get_current_span(context_from_kafka(headers)).get_span_context()
    assert carried.trace_id == span.get_span_context().trace_id


def test_grpc_metadata_carries_the_trace_to_a_real_server() -> None:
    def handler(request: bytes, context: grpc.ServicerContext) -> bytes:
        span_context = trace.get_current_span(context_from_grpc(context.invocation_metadata())).get_span_context()
        return format(span_context.trace_id, "032x").encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler("test.Echo", {"Trace": grpc.unary_unary_rpc_method_handler(handler)})]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary("/test.Echo/Trace")
            with tracer.start_as_current_span("client") as span:
                answer = call(b"", metadata=grpc_metadata(), timeout=5)
    finally:
        server.stop(grace=None)
    assert answer.decode() == format(span.get_span_context().trace_id, "032x")
