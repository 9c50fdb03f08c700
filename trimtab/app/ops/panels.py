"""What an operator watches, as PromQL: one list of panels for both the ops page (`trimtab ops`) and
the Grafana dashboard (deploy/observability/grafana/trimtab.json, written from this list by
`python -m trimtab.app.ops.panels`; a test checks the committed file is what this writes).

Every query reads series trimtab exports (docs/metrics.md) or vLLM's own (`vllm:*`, from serving's
/metrics, matched by `vllm()` however the scrape spelt them); `$__rate_interval` is Grafana's rate
window, which the ops page sets from its step.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

RATE = "$__rate_interval"


def vllm(name: str) -> str:
    """A vLLM metric whichever way the scrape spelt it: prometheus_client writes `vllm:x` as `vllm_x` in
    OpenMetrics unless the scraper asks for UTF-8 names (Prometheus 2.x never does; 3.x does by default)."""
    return f'{{__name__=~"vllm[:_]{name}"}}'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str  # Grafana's legendFormat: {{label}} placeholders


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str  # a Grafana unit: reqps, s, short, percentunit
    queries: tuple[Query, ...]


def quantiles(
    histogram: str, *qs: float, by: str = "", window: str = RATE, since_start: bool = False
) -> tuple[Query, ...]:
    """p50/p99-style queries of an OpenTelemetry histogram (`..._seconds`), optionally per label.

    `since_start` is for a histogram observed rarely (once per published version): where the window holds
    no increase, the quantile over all the process observed. `rate` sees no increase in a series' first
    sample, and a quantile of no increase is NaN (dropped by `>= 0`), so without it the panel of a learner
    that has published one version, or none lately, shows no data."""
    group = f"le, {by}" if by else "le"
    legend = f"{{{{{by}}}}} " if by else ""
    queries = []
    for q in qs:
        windowed = f"histogram_quantile({q}, sum by ({group}) (rate({histogram}_bucket[{window}])))"
        if not since_start:
            queries.append(Query(windowed, f"{legend}p{round(q * 100)}"))
            continue
        cumulative = f"histogram_quantile({q}, sum by ({group}) ({histogram}_bucket))"
        since = f"{legend}p{round(q * 100)} ({window}, else since start)"
        queries.append(Query(f"({windowed} >= 0) or {cumulative}", since))
    return tuple(queries)


def rate(counter: str, by: str = "", selector: str = "", window: str = RATE) -> Query:
    grouping = f" by ({by})" if by else ""
    legend = " ".join(f"{{{{{label.strip()}}}}}" for label in by.split(",")) if by else counter
    return Query(f"sum{grouping} (rate({counter}{selector}[{window}]))", legend)


ROWS: tuple[tuple[str, tuple[Panel, ...]], ...] = (
    (
        "Serving",
        (
            Panel("Requests/s by outcome", "reqps", (rate("trimtab_serving_requests_total", "outcome"),)),
            Panel("Generated tokens/s by version", "short", (rate("trimtab_serving_tokens_total", "version"),)),
            Panel("Time to first token", "s", quantiles("gen_ai_server_time_to_first_token_seconds", 0.5, 0.99)),
            Panel("Time per output token", "s", quantiles("gen_ai_server_time_per_output_token_seconds", 0.5, 0.99)),
            Panel(
                "Request duration by answering version",
                "s",
                quantiles("gen_ai_server_request_duration_seconds", 0.99, by="gen_ai_response_model"),
            ),
            Panel(
                "In flight: trimtab and the engine",
                "short",
                (
                    Query("sum(trimtab_serving_inflight)", "trimtab in flight"),
                    Query(f"sum({vllm('num_requests_running')})", "engine running"),
                    Query(f"sum({vllm('num_requests_waiting')})", "engine waiting"),
                ),
            ),
            Panel("Engine KV cache usage", "percentunit", (Query(f"max({vllm('kv_cache_usage_perc')})", "KV cache"),)),
            Panel(
                "Reward of served answers by version (15 min mean)",
                "short",
                (
                    Query(
                        "sum by (version) (delta(trimtab_serving_served_reward_sum[15m]))"
                        " / sum by (version) (increase(trimtab_serving_served_reward_scored_total[15m]))",
                        "{{version}}",
                    ),
                ),
            ),
            # Rare events (swaps, rounds, version decisions) as totals since the process started: a windowed
            # increase is mostly empty for them, and a series' first event cannot enter an increase at all.
            Panel(
                "Weight swaps since the replica started",
                "short",
                (Query("sum by (role, ok) (trimtab_serving_swaps_total)", "{{role}} ok={{ok}}"),),
            ),
            Panel(
                "Swap stall: generation paused, mean per swap",
                "s",
                (
                    Query(
                        "sum by (mode) (trimtab_serving_swap_stall_seconds_sum)"
                        " / sum by (mode) (trimtab_serving_swap_stall_seconds_count)",
                        "{{mode}}",
                    ),
                ),
            ),
        ),
    ),
    (
        "Guardrails",
        (
            Panel(
                "Guardrail decisions/s by rail and action",
                "reqps",
                (rate("trimtab_guardrails_decisions_total", "rail, action"),),
            ),
            Panel(
                "Guardrail check latency", "s", quantiles("trimtab_guardrails_check_latency_seconds", 0.99, by="stage")
            ),
        ),
    ),
    (
        "Feedback",
        (
            Panel(
                "Feedback accepted/s by kind",
                "reqps",
                (rate("trimtab_feedback_accepted_total", "kind", selector='{replayed="false"}'),),
            ),
            Panel("Feedback refused/s by reason", "reqps", (rate("trimtab_feedback_rejected_total", "reason"),)),
            Panel(
                "Feedback: send to the broker's ack",
                "s",
                quantiles("trimtab_feedback_produce_latency_seconds", 0.5, 0.99),
            ),
            Panel(
                "Feedback: calls going on together (cohorts; 1: alone)",
                "short",
                quantiles("trimtab_feedback_cohort_calls", 0.5, 0.9),
            ),
        ),
    ),
    (
        "Learner",
        (
            Panel(
                "Learner backlog and intake",
                "short",
                (
                    Query("max(trimtab_learner_backlog)", "backlog (items)"),
                    Query(f"sum(rate(trimtab_learner_feedback_consumed_total[{RATE}]))", "consumed/s"),
                ),
            ),
            Panel(
                "Rounds by outcome since the learner started",
                "short",
                (Query("sum by (outcome) (trimtab_learner_rounds_total)", "{{outcome}}"),),
            ),
            Panel(
                "Round phases, wall time",
                "s",
                quantiles("trimtab_learner_phase_duration_seconds", 0.5, by="phase", window="15m"),
            ),
            Panel(
                "Training loss by head",
                "short",
                (Query("max by (head, algorithm) (trimtab_learner_loss)", "{{head}} {{algorithm}}"),),
            ),
            Panel(
                "Gate: KL of the last candidate and its bound",
                "short",
                (Query('max by (metric) (trimtab_learner_gate{metric=~"candidate_kl|max_kl"})', "{{metric}}"),),
            ),
            Panel(
                "Gate: reward of the last candidate and the current version",
                "short",
                (
                    Query(
                        'max by (metric) (trimtab_learner_gate{metric=~"candidate_reward|current_reward"})',
                        "{{metric}}",
                    ),
                ),
            ),
            Panel(
                "Freshness: feedback accepted to a version trained on it",
                "s",
                quantiles("trimtab_learner_feedback_age_seconds", 0.5, 0.9, window="15m", since_start=True),
            ),
            Panel(
                "Version decisions since the learner started",
                "short",
                (Query("sum by (type) (trimtab_learner_version_events_total)", "{{type}}"),),
            ),
            Panel(
                "Feedback items trained/s by head",
                "short",
                (rate("trimtab_learner_items_trained_total", "head", window="5m"),),
            ),
        ),
    ),
)


def panels() -> list[Panel]:
    return [panel for _, row in ROWS for panel in row]


def grafana_dashboard() -> dict[str, object]:
    """The panels as a Grafana dashboard (JSON model, schema 39): a row per group, three panels a line,
    every query through the `datasource` variable (pick your Prometheus on import)."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    items: list[dict[str, object]] = []
    y = 0
    for title, row in ROWS:
        items.append({"id": len(items) + 1, "type": "row", "title": title, "collapsed": False, "panels": []})
        items[-1]["gridPos"] = {"h": 1, "w": 24, "x": 0, "y": y}
        y += 1
        for i, panel in enumerate(row):
            if i and i % 3 == 0:
                y += 8
            targets = [
                {"refId": chr(ord("A") + j), "datasource": datasource, "expr": q.expr, "legendFormat": q.legend}
                for j, q in enumerate(panel.queries)
            ]
            items.append(
                {
                    "id": len(items) + 1,
                    "type": "timeseries",
                    "title": panel.title,
                    "datasource": datasource,
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                    "targets": targets,
                }
            )
        y += 8
    return {
        "title": "trimtab",
        "uid": "trimtab-overview",
        "description": "Serving, guardrails, feedback and the online learner of one trimtab deployment"
        " (deploy/observability/prometheus.yml's jobs). Written by `python -m trimtab.app.ops.panels`.",
        "tags": ["trimtab"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-3h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {
            "list": [{"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus"}]
        },
        "annotations": {"list": []},
        "panels": items,
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(grafana_dashboard(), indent=2) + "\n")
