"""deploy/observability/: the scrape config and the alert rules pass Prometheus's own checks
(`promtool`, from Debian's prometheus package, installed by `make test`), the rules' unit tests pass, and
every series an alert or the Grafana dashboard reads is one trimtab exports (docs/metrics.md, itself
checked against the code). The dashboard's queries are run against a real Prometheus scraping the running
processes in tests/loop/test_demo_learner.py."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.deploy.prometheus import DASHBOARD, dashboard_queries
from tests.test_metrics_documented import documented
from trimtab.app.ops.panels import grafana_dashboard, panels
from trimtab.config import TelemetryConfig

OBSERVABILITY = REPO / "deploy/observability"
SUFFIXES = {"counter": ("_total",), "histogram": ("_seconds_bucket", "_seconds_sum", "_seconds_count")}


def promtool(*args: str) -> str:
    done = subprocess.run(["promtool", *args], cwd=OBSERVABILITY, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_the_scrape_config_is_valid_and_loads_the_rules() -> None:
    assert "1 rule files found" in promtool("check", "config", "prometheus.yml")


def test_the_alert_rules_are_valid_and_fire_as_their_unit_tests_say() -> None:
    promtool("check", "rules", "alerts.yml")
    promtool("test", "rules", "alerts.test.yml")
    rules = yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", (OBSERVABILITY / "alerts.test.yml").read_text()))
    assert alerts == tested  # every alert has a unit test


FRESHNESS_BUCKETS = ("30", "60", "+Inf")


def freshness_series(*counts: str) -> list[dict[str, str]]:
    """promtool input series of the freshness histogram: one `values` string per bucket, in FRESHNESS_BUCKETS' order."""
    name = "trimtab_learner_feedback_age_seconds_bucket"
    return [
        {"series": f'{name}{{le="{le}"}}', "values": values}
        for le, values in zip(FRESHNESS_BUCKETS, counts, strict=True)
    ]


def test_the_freshness_panel_shows_the_first_published_version_and_then_the_last_window(tmp_path: Path) -> None:
    """Freshness is observed once per published version. With one publish (ages 20, 40 and 50 s, already in
    the first scrape) the window holds no increase and the panel falls back to the quantile since the
    learner started; after a second publish (two more at 50 s) it shows the window's own."""
    (p50, _), *_ = [panel.queries for panel in panels() if panel.title.startswith("Freshness")]
    rules = tmp_path / "none.yml"
    rules.write_text("groups: []\n")
    one = {"interval": "1m", "input_series": freshness_series("1x20", "3x20", "3x20")}
    one["promql_expr_test"] = [{"expr": p50.expr, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 37.5}]}]
    two = {"interval": "1m", "input_series": freshness_series("1x20", "1x4 3x15", "1x4 3x15")}
    two["promql_expr_test"] = [{"expr": p50.expr, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": 45}]}]
    tests = tmp_path / "freshness.test.yml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": [one, two]}))
    promtool("test", "rules", str(tests))
    assert "since start" in p50.legend


def exported() -> set[str]:
    """The Prometheus names of every documented metric."""
    names = set()
    for name, (kind, unit) in documented().items():
        base = name.replace(".", "_")
        if kind == "histogram" and unit != "s":
            names |= {base + suffix.replace("_seconds", "") for suffix in SUFFIXES["histogram"]}
        else:
            names |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    return names


def test_every_series_an_alert_reads_is_one_trimtab_exports() -> None:
    read = set(re.findall(r"\btrimtab_[a-z_]+", (OBSERVABILITY / "alerts.yml").read_text()))
    assert read and read <= exported(), sorted(read - exported())


def test_the_dashboard_reads_only_exported_series_through_its_datasource_variable() -> None:
    queries = dashboard_queries()
    read = {name for _, expr in queries for name in re.findall(r"\b(?:trimtab|gen_ai_server)_[a-z_]+", expr)}
    assert read and read <= exported(), sorted(read - exported())
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(target["datasource"] == panel["datasource"] for target in panel["targets"]), panel["title"]
    # vLLM's series come from serving's /metrics: names its PrometheusStatLogger registers.
    vllm = {f"vllm:{name}" for _, expr in queries for name in re.findall(r"vllm\[:_\]([a-z_]+)", expr)}
    spec = importlib.util.find_spec("vllm.v1.metrics.loggers")
    assert spec is not None and spec.origin is not None
    loggers = Path(spec.origin).read_text()
    assert vllm and all(f'name="{name}"' in loggers for name in vllm), vllm


def test_the_collector_config_takes_what_trimtab_sends_and_wires_every_pipeline() -> None:
    """No collector binary installs from our registries: this checks the config's wiring and that it
    listens where trimtab's telemetry.otlp_endpoint sends by default, for each signal trimtab emits."""
    collector = yaml.safe_load((OBSERVABILITY / "otel-collector.yaml").read_text())
    default = TelemetryConfig()
    grpc_endpoint = collector["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert grpc_endpoint.rsplit(":", 1)[1] == default.otlp_endpoint.rsplit(":", 1)[1]
    pipelines = collector["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics", "logs"}  # spans, metrics, events
    for name, pipeline in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            assert pipeline[kind] and all(part in collector[kind] for part in pipeline[kind]), (name, kind)
        assert pipeline["processors"][0] == "memory_limiter", name  # the collector's own advice: first
    assert set(collector["service"]["extensions"]) <= set(collector["extensions"])


def test_the_committed_dashboard_is_the_one_the_ops_panels_write() -> None:
    """One list of panels (trimtab/app/ops/panels.py) for the ops page and Grafana: regenerate with
    `python -m trimtab.app.ops.panels > deploy/observability/grafana/trimtab.json`."""
    assert json.loads(DASHBOARD.read_text()) == grafana_dashboard()
