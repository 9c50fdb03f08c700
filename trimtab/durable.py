"""Durable writes: what the registry, the learner's checkpoints and the model caches need for a rename to
survive a crash."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def fsync_dir(directory: Path) -> None:
    """fsync a directory, so that the entries created or renamed in it are on disk."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def replaced_atomically(target: Path, label: str = "writing") -> Iterator[Path]:
    """A fresh directory beside `target` to write into; on a clean exit every file in it is fsynced and it
    replaces `target` by renames only, so a reader finds the old directory or the new one, never half of
    one (between the two renames, for a moment, none; files the old one's readers hold open stay readable).
    On an error `target` is left as it was. The staging directory is gone either way."""
    staging = target.parent / f".{target.name}.{label}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        _replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def keep_copy(directory: Path, cache: Path) -> None:
    """A copy of `directory` at `cache` (a build or an import kept for other checkouts), replaced atomically;
    raises OSError when it cannot be written."""
    with replaced_atomically(cache, "caching") as staging:
        shutil.copytree(directory, staging, dirs_exist_ok=True)


def _replace(staging: Path, target: Path) -> None:
    files = [path for path in staging.rglob("*") if path.is_file()]
    for path in files:
        with path.open("rb") as handle:
            os.fsync(handle.fileno())
    for directory in {staging, *(path.parent for path in files)}:
        fsync_dir(directory)
    retired = target.parent / f".{target.name}.retired-{os.getpid()}"
    shutil.rmtree(retired, ignore_errors=True)
    if target.exists():
        target.rename(retired)
    staging.rename(target)
    fsync_dir(target.parent)
    shutil.rmtree(retired, ignore_errors=True)
