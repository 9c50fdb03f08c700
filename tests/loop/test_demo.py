"""A short `trimtab demo` through the real services: the session's serving process (no second vLLM
engine), a `trimtab feedback` the harness starts itself, simulated users for half a minute, the live
display and the report. The online learner is off here (`demo.learner: false`) and a tenth of the users
are adversarial. In `make test-long`: tests/loop/test_demo_learner.py checks the same interactions, report
and display in `make test`, on its run with the learner on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from tests.loop.demo_config import short_demo_config
from tests.serving_process import ServingProcess
from trimtab.app.demo import run_demo
from trimtab.app.demo.records import Interaction, read_jsonl
from trimtab.app.demo.report import PLOTS

pytestmark = [pytest.mark.integration, pytest.mark.long]

USERS_S = 30


def test_a_short_demo_run_serves_takes_feedback_and_reports(serving: ServingProcess, tmp_path: Path) -> None:
    config = short_demo_config(
        serving,
        tmp_path,
        TRIMTAB_DEMO__LEARNER="false",
        TRIMTAB_DEMO__BIN_S="10",
        TRIMTAB_DEMO__USERS__DURATION_S=str(USERS_S),
        TRIMTAB_DEMO__USERS__ADVERSARIAL_SHARE="0.1",
    )
    output = io.StringIO()
    result = run_demo(config, Console(file=output, width=240, force_terminal=False))

    rows = [Interaction.from_json(row) for row in read_jsonl(result.run_dir / "interactions.jsonl")]
    assert len(rows) >= USERS_S  # 2/s asked for; at least 1/s served on a loaded 2-core machine
    assert result.failed_requests == 0, [row.error for row in rows if row.failed][:5]
    assert result.accepted == len(rows) and all(row.accepted for row in rows)
    assert {row.kind for row in rows} == {"pairwise", "thumb", "rating", "attributes", "correction"}
    assert all(len(row.answers) == (2 if row.kind == "pairwise" else 1) for row in rows)
    assert all(answer.version.startswith("ver_") for row in rows for answer in row.answers)
    assert any(row.adversarial for row in rows)

    assert result.exit_codes == {"feedback": 0}  # the harness started feedback and stopped it cleanly
    assert (result.run_dir / "feedback.log").is_file()
    page = result.report.read_text()
    for name in PLOTS:
        png = result.run_dir / "plots" / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert f"plots/{name}.png" in page
    text = output.getvalue()
    assert "feedback accepted" in text and str(result.report) in text.replace("\n", "")
