"""What every short demo run in the tests must show, learner on or off."""

from __future__ import annotations

from trimtab.app.demo import DemoResult
from trimtab.app.demo.records import Interaction, read_jsonl
from trimtab.app.demo.report import PLOTS


def served_accepted_and_reported(result: DemoResult, console: str, users_s: float) -> list[Interaction]:
    """Each interaction served and its feedback accepted, every kind of feedback, the report with its plots
    and the console naming it; the run's interactions."""
    rows = [Interaction.from_json(row) for row in read_jsonl(result.run_dir / "interactions.jsonl")]
    assert len(rows) >= users_s  # 2/s asked for; at least 1/s served on a loaded 2-core machine
    assert result.failed_requests == 0, [row.error for row in rows if row.failed][:5]
    assert result.accepted == len(rows) and all(row.accepted for row in rows)
    assert {row.kind for row in rows} == {"pairwise", "thumb", "rating", "attributes", "correction"}
    assert all(len(row.answers) == (2 if row.kind == "pairwise" else 1) for row in rows)
    assert all(answer.version.startswith("ver_") for row in rows for answer in row.answers)
    assert (result.run_dir / "feedback.log").is_file()
    page = result.report.read_text()
    for name in PLOTS:
        png = result.run_dir / "plots" / f"{name}.png"
        assert png.read_bytes().startswith(b"\x89PNG"), name
        assert f"plots/{name}.png" in page
    assert "feedback accepted" in console and str(result.report) in console.replace("\n", "")
    return rows
