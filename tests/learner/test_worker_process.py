"""A long-lived worker process (`learner.worker_process`, behind the rollout engine and the gates): its
set-up reaches it in a file, not on its command line; one process answers every call; a failing command
is an error and the worker keeps answering; a dead worker is an error naming its log; a stop while
waiting kills it and says so."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from learner.generation import Interrupted
from learner.worker_process import WorkerError, WorkerProcess

MODULE = "tests.learner.echo_worker"
SECRET = {"key": "sk-not-on-the-command-line"}


def test_one_process_answers_every_call_and_its_setup_never_shows_in_ps(tmp_path: Path) -> None:
    with WorkerProcess.started(MODULE, SECRET, name="the echo worker", log=tmp_path / "w.log") as worker:
        first = worker.call("setup", None)
        assert first["settings"] == SECRET
        assert "sk-not-on-the-command-line" not in " ".join(first["argv"])
        assert [worker.call("echo", i) for i in range(3)] == [0, 1, 2]
        assert worker.call("setup", None)["pid"] == first["pid"] == worker.process.pid
    assert worker.process.returncode is not None  # stopped on exit


def test_a_failing_command_is_an_error_and_the_worker_keeps_answering(tmp_path: Path) -> None:
    with WorkerProcess.started(MODULE, {}, name="the echo worker", log=tmp_path / "w.log") as worker:
        with pytest.raises(WorkerError, match=r"the echo worker's fail failed:(.|\n)*asked to fail: 7"):
            worker.call("fail", 7)
        assert worker.call("echo", "still here") == "still here"


def test_a_dead_worker_is_an_error_that_names_its_log(tmp_path: Path) -> None:
    log = tmp_path / "w.log"
    with (
        WorkerProcess.started(MODULE, {}, name="the echo worker", log=log) as worker,
        pytest.raises(WorkerError, match=f"the echo worker died .*its log {log}"),
    ):
        worker.call("die", None)


def test_a_stop_while_waiting_kills_the_worker_and_raises_interrupted(tmp_path: Path) -> None:
    with WorkerProcess.started(MODULE, {}, name="the echo worker", log=tmp_path / "w.log") as worker:
        worker.call("echo", None)  # started
        asked = time.monotonic() + 0.5
        with pytest.raises(Interrupted, match="the echo worker stopped"):
            worker.call("sleep", 60, should_stop=lambda: time.monotonic() > asked)
        assert time.monotonic() - asked < 5
        worker.process.wait(timeout=5)
        with pytest.raises(ProcessLookupError):
            os.killpg(worker.process.pid, 0)  # its whole group is gone


def test_a_worker_that_cannot_start_is_an_error_with_its_log(tmp_path: Path) -> None:
    missing = "tests.learner.no_such_worker"
    with (
        WorkerProcess.started(missing, {}, name="the missing worker", log=tmp_path / "w.log") as worker,
        pytest.raises(WorkerError, match=r"the missing worker exited 1 while starting:(.|\n)*No module named"),
    ):
        worker.call("echo", None)
