"""docs/metrics.md lists exactly the instruments the code creates, with their kind and unit: a metric
added, renamed or dropped in the code fails here until the table says so."""

from __future__ import annotations

import ast
import re

from opentelemetry.semconv._incubating.metrics import gen_ai_metrics

from tests.conftest import REPO

PACKAGES = ("trimtab", "serving", "feedback", "learner", "guardrails")
KINDS = {
    "create_counter": "counter",
    "create_up_down_counter": "up-down counter",
    "create_histogram": "histogram",
    "create_gauge": "gauge",
}


def created_in_code() -> dict[str, tuple[str, str]]:
    """name -> (instrument kind, unit) of every `meter.create_*("name", ...)` call."""
    found: dict[str, tuple[str, str]] = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if node.func.attr not in KINDS:
                    continue
                name = node.args[0]
                if isinstance(name, ast.Name):  # a name of OpenTelemetry's conventions, imported from semconv
                    name = ast.Constant(getattr(gen_ai_metrics, name.id))
                assert isinstance(name, ast.Constant), f"{path}:{node.lineno}: a metric name must be a literal"
                unit = next((k.value for k in node.keywords if k.arg == "unit"), ast.Constant(""))
                assert isinstance(unit, ast.Constant), f"{path}:{node.lineno}: a unit must be a literal"
                found[str(name.value)] = (KINDS[node.func.attr], str(unit.value))
    return found


def documented() -> dict[str, tuple[str, str]]:
    rows = re.findall(r"^\| `([^`]+)` \|([^|]+)\|([^|]*)\|", (REPO / "docs/metrics.md").read_text(), re.MULTILINE)
    return {name: (kind.strip(), unit.strip().strip("`")) for name, kind, unit in rows}


def test_every_metric_the_code_creates_is_documented_with_its_kind_and_unit() -> None:
    code = created_in_code()
    assert len(code) >= 30  # the walk found the instruments (a broken walk must not pass vacuously)
    assert code == documented()
