"""deploy/observability/: the scrape config and the alert rules pass Prometheus's own checks
(`promtool`, from Debian's prometheus package, installed by `make test`), the rules' unit tests pass, and
every series an alert reads is one trimtab exports (docs/metrics.md, itself checked against the code)."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.conftest import REPO
from tests.test_metrics_documented import documented

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


def test_every_series_an_alert_reads_is_one_trimtab_exports() -> None:
    exported = set()
    for name, (kind, unit) in documented().items():
        base = name.replace(".", "_")
        if kind == "histogram" and unit != "s":
            exported |= {base + suffix.replace("_seconds", "") for suffix in SUFFIXES["histogram"]}
        else:
            exported |= {base + suffix for suffix in SUFFIXES.get(kind, ("",))}
    read = set(re.findall(r"\btrimtab_[a-z_]+", (OBSERVABILITY / "alerts.yml").read_text()))
    assert read and read <= exported, sorted(read - exported)
