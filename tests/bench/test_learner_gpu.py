"""The learner bench's GPU geometry (bench/learner_gpu.py) runs its whole path at toy sizes on the CPU:
both sides in processes of their own, a torchrun-style rank for trimtab, rows for DPO (and KTO). On a
machine with CUDA the same code runs the ~0.5B bf16 geometry."""

from __future__ import annotations

import pytest

from bench.learner import _gpu_rows
from bench.learner_gpu import TINY, TINY_ENV
from bench.simulation import simulation_config

pytestmark = pytest.mark.integration


# KTO's row takes the same path as DPO's with another loss and batch: `make test-long`.
@pytest.mark.parametrize(
    ("algorithm", "unit"), [("dpo", "pairs/s"), pytest.param("kto", "examples/s", marks=pytest.mark.long)]
)
def test_the_gpu_geometry_measures_both_sides(monkeypatch: pytest.MonkeyPatch, algorithm: str, unit: str) -> None:
    monkeypatch.setenv(TINY_ENV, "1")
    rows = _gpu_rows(simulation_config(), rounds=1, algorithms=(algorithm,))
    assert [row.unit for row in rows] == [unit, unit, "GFLOP/s"]
    for row in rows:
        assert row.candidate_value > 0 and row.baseline_value > 0, row
        assert f"hidden {TINY.hidden}, {TINY.layers} layers" in row.name
    throughput = [row for row in rows if row.unit != "GFLOP/s"]
    assert all(row.baseline.startswith("TRL") and "float32" in row.name for row in throughput)
    assert rows[2].baseline == "float32 torch.mm 256^3 on cpu"
