"""The LM-head bench (bench/lm_head.py) times both sides on the real model, packed pairs and a plain batch,
the candidate's head starting at the first scored position, after the chat template's prompt."""

from __future__ import annotations

import pytest

from bench.lm_head import bench_lm_head
from bench.simulation import simulation_config

pytestmark = pytest.mark.integration


def test_the_head_bench_times_both_layouts_from_their_first_scored_position() -> None:
    rows = bench_lm_head(simulation_config(), examples=1, rounds=1)
    labels = [row.name.split(":")[0] for row in rows]
    assert labels == ["learner LM head, DPO packed pairs", "learner LM head, KTO / SFT answers"]
    for row in rows:
        assert row.unit == "s" and not row.higher_is_better
        assert row.candidate_value > 0 and row.baseline_value > 0, row
        first = int(row.candidate.split("position ")[1].split(" ")[0])
        assert first > 20, row.candidate  # SmolLM2's template puts a system prompt before every question
