"""OpenTelemetry spine: providers from config, and W3C trace context across gRPC and Kafka.

Every process calls `setup_telemetry(config.telemetry, "serving")` once at start-up, then uses the
plain OpenTelemetry API (`trace.get_tracer(__name__)`, `metrics.get_meter(__name__)`). Trace context
crosses process boundaries in gRPC metadata and Kafka headers with the helpers below, so a feedback
event's span links back to the request that produced the response.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opentelemetry import _logs, metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

from trimtab.config import TelemetryConfig, TlsConfig
from trimtab.errors import TrimtabError

# Histogram bucket boundaries (seconds) for trimtab's own timings: the SDK's default buckets start at
# 5 s, which would put every sub-second latency in one bucket (a p99 of 4.95 s from 10 ms calls).
FAST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # calls
SLOW_BUCKETS_S = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)  # work

KafkaHeaders = list[tuple[str, bytes]]
GrpcMetadata = Sequence[tuple[str, str | bytes]]


@dataclass
class Telemetry:
    """The providers a process set up; `shutdown()` flushes and stops their exporters."""

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    logger_provider: LoggerProvider | None = None  # events (OpenTelemetry's logs API with an event name)

    def shutdown(self) -> None:
        for provider in (self.tracer_provider, self.meter_provider, self.logger_provider):
            if provider is not None:
                provider.shutdown()


def build_telemetry(
    config: TelemetryConfig, component: str, tls: TlsConfig | None = None, instance: str | None = None
) -> Telemetry:
    """Providers for `config`, not yet installed as the process globals (tests build several). `tls`: how
    the Prometheus endpoint serves (TLS, and mTLS for scrapers, as trimtab's other servers). `instance`: the
    process's `service.instance.id`, where one component runs as several processes (their pushed metrics
    would otherwise be one series written by many)."""
    attributes = {"service.name": f"{config.service_name}-{component}"}
    if instance is not None:
        attributes["service.instance.id"] = instance
    resource = Resource.create(attributes)
    tracer_provider = None
    if config.traces != "off":
        tracer_provider = TracerProvider(resource=resource, sampler=ParentBased(TraceIdRatioBased(config.sample_ratio)))
        tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(config)))
    meter_provider = None
    if config.metrics != "off":
        meter_provider = MeterProvider(resource=resource, metric_readers=[_metric_reader(config, tls or TlsConfig())])
    logger_provider = None
    if config.events != "off":
        logger_provider = LoggerProvider(resource=resource)
        logger_provider.add_log_record_processor(BatchLogRecordProcessor(_event_exporter(config)))
    return Telemetry(tracer_provider, meter_provider, logger_provider)


def setup_telemetry(
    config: TelemetryConfig, component: str, tls: TlsConfig | None = None, instance: str | None = None
) -> Telemetry:
    """Build the providers and install them as this process's global tracer and meter providers."""
    telemetry = build_telemetry(config, component, tls, instance)
    if telemetry.tracer_provider is not None:
        trace.set_tracer_provider(telemetry.tracer_provider)
    if telemetry.meter_provider is not None:
        metrics.set_meter_provider(telemetry.meter_provider)
    if telemetry.logger_provider is not None:
        _logs.set_logger_provider(telemetry.logger_provider)
    return telemetry


def _span_exporter(config: TelemetryConfig) -> SpanExporter:
    if config.traces == "console":
        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=config.otlp_endpoint, insecure=config.otlp_endpoint.startswith("http://"))


def _event_exporter(config: TelemetryConfig) -> LogRecordExporter:
    if config.events == "console":
        return ConsoleLogRecordExporter()
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    return OTLPLogExporter(endpoint=config.otlp_endpoint, insecure=config.otlp_endpoint.startswith("http://"))


def _metric_reader(config: TelemetryConfig, tls: TlsConfig) -> MetricReader:
    interval = config.export_interval_ms
    if config.metrics == "console":
        return PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=interval)
    if config.metrics == "prometheus":
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        # Pull-based: Prometheus scrapes /metrics. Never call MeterProvider.force_flush() with this
        # reader: it duplicates series (design.md).
        try:
            start_http_server(
                config.prometheus_port,
                addr=config.prometheus_host,
                certfile=str(tls.cert_file) if tls.enabled else None,
                keyfile=str(tls.key_file) if tls.enabled else None,
                client_cafile=str(tls.ca_file) if tls.enabled and tls.client_auth else None,
                client_auth_required=tls.enabled and tls.client_auth,
            )
        except OSError as exc:
            # Every component defaults to the same port: the second process on a machine lands here.
            raise TrimtabError(
                f"telemetry.prometheus_port: cannot serve /metrics on {config.prometheus_host}:"
                f"{config.prometheus_port} ({exc.strerror}); give each process its own port "
                "(TRIMTAB_TELEMETRY__PROMETHEUS_PORT)"
            ) from exc
        return PrometheusMetricReader()
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

    exporter = OTLPMetricExporter(endpoint=config.otlp_endpoint, insecure=config.otlp_endpoint.startswith("http://"))
    return PeriodicExportingMetricReader(exporter, export_interval_millis=interval)


class _PairsGetter(Getter[Iterable[tuple[str, str | bytes]]]):
    """Reads a carrier that is a list of (key, value) pairs: gRPC metadata or Kafka headers."""

    def get(self, carrier: Iterable[tuple[str, str | bytes]], key: str) -> list[str] | None:
        values = [_text(v) for k, v in carrier if k.lower() == key]
        return values or None

    def keys(self, carrier: Iterable[tuple[str, str | bytes]]) -> list[str]:
        return [k for k, _ in carrier]


class _DictSetter(Setter[dict[str, str]]):
    def set(self, carrier: dict[str, str], key: str, value: str) -> None:
        carrier[key] = value


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


def trace_fields(context: Context | None = None) -> dict[str, str]:
    """The W3C text-map fields (traceparent, ...) of `context` or the current one; empty when not tracing."""
    fields: dict[str, str] = {}
    propagate.inject(fields, context=context, setter=_DictSetter())
    return fields


def grpc_metadata(context: Context | None = None) -> list[tuple[str, str]]:
    """Trace context (traceparent, tracestate, baggage) as gRPC metadata for an outgoing call."""
    return list(trace_fields(context).items())


def context_from_grpc(metadata: GrpcMetadata | None) -> Context:
    """The caller's trace context from incoming gRPC invocation metadata."""
    return propagate.extract(list(metadata or ()), getter=_PairsGetter())


def kafka_headers(context: Context | None = None) -> KafkaHeaders:
    """Trace context as Kafka record headers (values are bytes on the wire)."""
    return [(key, value.encode("latin-1")) for key, value in trace_fields(context).items()]


def context_from_kafka(headers: Iterable[tuple[str, bytes]] | None) -> Context:
    """The producer's trace context from a consumed record's headers."""
    return propagate.extract(list(headers or ()), getter=_PairsGetter())
