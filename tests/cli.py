"""The real `trimtab` command in a child process, for the tests that drive it as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping

from tests.conftest import REPO


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`python -m trimtab.app.cli ARGS` from the repository root, with this process's environment less
    its TRIMTAB_ variables, plus `env`; its exit code and output."""
    environ = {key: value for key, value in os.environ.items() if not key.startswith("TRIMTAB_")} | dict(env or {})
    command = [sys.executable, "-m", "trimtab.app.cli", *args]
    return subprocess.run(command, cwd=REPO, env=environ, capture_output=True, text=True, timeout=timeout)
