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

from tests.loop.demo_checks import served_accepted_and_reported
from tests.loop.demo_config import short_demo_config
from tests.serving_process import ServingProcess
from trimtab.app.demo import run_demo

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

    rows = served_accepted_and_reported(result, output.getvalue(), USERS_S)
    assert any(row.adversarial for row in rows)
    assert result.exit_codes == {"feedback": 0}  # the harness started feedback and stopped it cleanly
