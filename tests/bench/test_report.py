"""The benchmark report: one table row per comparison, numbers readable at any scale."""

from __future__ import annotations

import json
from pathlib import Path

from bench.report import Comparison, write_report


def test_rows_keep_three_significant_digits_below_ten(tmp_path: Path) -> None:
    rows = [
        Comparison("throughput", "tokens/s", "tier", 1521.34, "bare", 1907.0),
        Comparison("cpu", "CPU-s", "tier", 0.2314, "bare", 0.0771, higher_is_better=False),
    ]
    table = write_report(rows, tmp_path).read_text()
    assert "| throughput | tier: 1,521.3 tokens/s | bare: 1,907.0 tokens/s | **0.80x** |" in table
    assert "| cpu | tier: 0.231 CPU-s | bare: 0.0771 CPU-s | **0.33x** |" in table
    saved = json.loads((tmp_path / "latest.json").read_text())
    assert [row["candidate_value"] for row in saved] == [1521.34, 0.2314]
