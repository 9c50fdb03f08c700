"""SIGKILL a process and everything it started, as a lost pod loses them."""

from __future__ import annotations

import contextlib

import psutil


def kill_tree(pid: int) -> None:
    """By tree, not by process group: torchrun starts each rank in a session of its own, as the learner
    starts each of its worker processes (the rollout engine, the gates)."""
    root = psutil.Process(pid)
    for member in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
