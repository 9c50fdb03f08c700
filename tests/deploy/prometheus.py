"""A real Prometheus for the tests (Debian's `prometheus`, installed by `make tools`): the shipped scrape
config (deploy/observability/prometheus.yml, its alert rules loaded) with the test's targets, scraping
every second; and the Grafana dashboard's queries run against it."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO, free_port

OBSERVABILITY = REPO / "deploy/observability"
DASHBOARD = OBSERVABILITY / "grafana/trimtab.json"


@dataclass(frozen=True)
class Prometheus:
    url: str
    log: Path

    def query_range(self, expr: str, start: float, end: float, step_s: float = 2.0) -> list[dict[str, Any]]:
        """The series `expr` gives over [start, end] (a PromQL error fails the test with Prometheus's words)."""
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step_s})
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query_range?{query}", timeout=30) as response:
                body = json.load(response)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        assert body["status"] == "success", f"{expr}: {body.get('error')}"
        return list(body["data"]["result"])

    def targets_up(self) -> dict[str, bool]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as response:
            active = json.load(response)["data"]["activeTargets"]
        return {target["labels"]["job"]: target["health"] == "up" for target in active}


@contextmanager
def running_prometheus(workdir: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """Prometheus scraping `targets` (job name in prometheus.yml -> host:port), every second."""
    config = yaml.safe_load((OBSERVABILITY / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert set(targets) == jobs, f"prometheus.yml's jobs are {sorted(jobs)}"
    config["global"] |= {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(OBSERVABILITY / "alerts.yml")]
    for job in config["scrape_configs"]:
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port, log = free_port(), workdir / "prometheus.log"
    argv = [
        "prometheus",
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    process = subprocess.Popen(argv, stdout=log.open("w"), stderr=subprocess.STDOUT)
    prometheus = Prometheus(f"http://127.0.0.1:{port}", log)
    try:
        _wait_ready(prometheus, process)
        yield prometheus
    finally:
        process.terminate()
        process.wait(timeout=30)


def _wait_ready(prometheus: Prometheus, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"{prometheus.url}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"prometheus not ready (exit code {process.poll()}):\n{prometheus.log.read_text()[-3000:]}")


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel of the Grafana dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def as_promql(expr: str) -> str:
    """A dashboard query as Grafana sends it, with its interval variable at the one-second scrape's value."""
    return expr.replace("$__rate_interval", "1m")


def queries_without_data(prometheus: Prometheus, start: float, end: float) -> list[str]:
    """Each dashboard query with no numeric point over [start, end]: '<panel>: <query>'."""
    empty = []
    for title, expr in dashboard_queries():
        series = prometheus.query_range(as_promql(expr), start, end)
        values = [float(value) for one in series for _, value in one["values"]]
        if not any(value == value for value in values):  # only NaN (a quantile of nothing) is no data either
            empty.append(f"{title}: {expr}")
    return empty
