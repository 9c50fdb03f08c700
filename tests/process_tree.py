"""SIGKILL a process and everything it started, as a lost pod loses them."""

from __future__ import annotations

import contextlib

import psutil


def tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def kill_tree(pid: int) -> None:
    """By tree, not by process group: torchrun starts each rank in a session of its own, as the learner
    starts each of its worker processes (the rollout engine, the gates)."""
    for member in tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
