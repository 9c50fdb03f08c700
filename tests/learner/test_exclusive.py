"""One online learner per checkpoint directory: a second one is refused naming the first, and a learner
that died (SIGKILL included) leaves nothing behind that a restart waits for."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from learner.online.exclusive import LearnerRunning, exclusive
from tests.conftest import REPO

HOLD = """
import sys, time
from pathlib import Path
from learner.online.exclusive import exclusive
with exclusive(Path(sys.argv[1])):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding `tmp_path / "checkpoints"`, as a running learner's rank 0 does."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path / "checkpoints")], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_second_learner_is_refused_naming_the_first_until_it_dies(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(LearnerRunning, match=f"pid {holder.pid} on "), exclusive(checkpoints):
        pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    # At once: the kernel released the dead holder's lock. Held again, this process is the one named.
    with exclusive(checkpoints), pytest.raises(LearnerRunning, match=f"pid {os.getpid()} on "), exclusive(checkpoints):
        pass
    with exclusive(checkpoints):  # and this process's own, on leaving
        pass


def test_trimtab_learn_online_refuses_to_start_beside_a_running_learner(
    holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMTAB_")}
    env["TRIMTAB_LEARNER__ONLINE__CHECKPOINT_DIR"] = str(tmp_path / "checkpoints")
    # A config that would start: the default files suite has no held-out prompts, which gated rounds need.
    env["TRIMTAB_LEARNER__ONLINE__GATES__ENABLED"] = "false"
    done = subprocess.run(
        [sys.executable, "-m", "trimtab.app.cli", "learn", "--online"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert (
        f"another online learner is running on {tmp_path / 'checkpoints'} (pid {holder.pid} on "
        in done.stderr + done.stdout
    )
