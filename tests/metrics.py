"""Reading OpenTelemetry metrics back in tests, from an SDK `InMemoryMetricReader`."""

from __future__ import annotations

from typing import Any, Literal

from opentelemetry.sdk.metrics.export import InMemoryMetricReader

Series = tuple[tuple[str, Any], ...]


def series(**attributes: Any) -> Series:
    """The key of one series in `metric_points`: its attributes, sorted."""
    return tuple(sorted(attributes.items()))


def metric_points(
    reader: InMemoryMetricReader, name: str, histogram: Literal["count", "sum"] = "count"
) -> dict[Series, float]:
    """Each series' current value: a counter's or gauge's value, a histogram's count (or sum)."""
    data = reader.get_metrics_data()
    points: dict[Series, float] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        points[series(**(point.attributes or {}))] = (
                            value if value is not None else getattr(point, histogram)
                        )
    return points
