"""Durable checkpoints of an FSDP2 training run, written atomically, found again by fingerprint.

A checkpoint is one directory, `DIR/step-00000120/`:

    state.json       step, world size, the run's fingerprint, LR scheduler state(s), `extra` (rank 0's)
    metrics.jsonl    the metrics log up to this step (rank 0's)
    weights/         model + optimizer (and a companion model's), sharded: torch.distributed.checkpoint
    rng/rank-R.pt    rank R's python, numpy, torch CPU (and CUDA) random states

Every rank writes its share into `DIR/.partial-step-00000120/`; once all have written and fsynced,
rank 0 fsyncs the tree, renames it into place and fsyncs DIR. A directory named `step-*` is therefore
always complete, and a run killed mid-save leaves only a `.partial-*` that the next run removes.
`Checkpointer.save` returns, on every rank, only after that rename is durable: a caller that must
not get ahead of the checkpoint (the online learner commits its Kafka offsets, stored in `extra`)
acts after `save` returns.

    checkpointer = Checkpointer(directory, fingerprint, context, keep=2)
    found = checkpointer.latest()                  # None, or the newest checkpoint of THIS run
    if found is not None:
        checkpointer.restore(found, state)         # model, optimizer, scheduler and RNG, in place
        offsets = found.extra["offsets"]
    ...
    checkpointer.save(step, state, metrics_log=log, extra={"offsets": offsets})
    consumer.commit(offsets)                       # only now

The directory must be shared by all ranks (one node, or a shared filesystem). Every method is
collective: all ranks call it, in the same order.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from learner.distributed import DistContext
from trimtab.durable import fsync_dir
from trimtab.errors import TrimtabError

STATE_FILE = "state.json"
METRICS_LOG = "metrics.jsonl"
WEIGHTS = "weights"
RNG = "rng"
FORMAT = 1
_STEP_DIR = re.compile(r"step-(\d{8})")


class CheckpointMismatchError(TrimtabError):
    """The checkpoint directory holds another run's checkpoints; the message names what differs."""


@dataclass(frozen=True)
class TrainingState:
    """What a checkpoint saves and restores in place."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    # A second model trained beside the first and saved in the same checkpoint, atomically with it (the
    # online learner's reward model): restoring one without the other would break exactly-once training.
    companion: TrainingState | None = None

    def parts(self) -> dict[str, TrainingState]:
        """Each trained model by its key prefix in the checkpoint ("" for the main one)."""
        return {"": self} | ({"companion.": self.companion} if self.companion is not None else {})


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk (from `Checkpointer.latest` or `Checkpointer.save`)."""

    path: Path
    step: int  # optimiser steps done when it was taken
    fingerprint: dict[str, Any]
    extra: dict[str, Any]  # the caller's JSON-able state (rank 0's), e.g. Kafka offsets
    metrics_log: str  # the metrics JSONL up to `step`, as rank 0 wrote it
    scheduler: dict[str, Any]  # the LR scheduler's state_dict
    companion_scheduler: dict[str, Any] | None = None  # the companion model's (TrainingState.companion)


class Checkpointer:
    """Saves and finds the checkpoints of one run in `directory`, keeping the newest `keep`.

    `fingerprint` says which run this is (JSON-able values, compared key by key; the world size is
    added): a checkpoint whose fingerprint differs is never resumed, it is an error naming the keys.
    """

    def __init__(self, directory: Path, fingerprint: Mapping[str, Any], context: DistContext, keep: int) -> None:
        if keep < 1:
            raise TrimtabError(f"a checkpointer must keep at least one checkpoint, got keep={keep}")
        self.directory = directory
        self.context = context
        self.keep = keep
        # A JSON round trip, so that tuples compare equal to the lists read back from state.json.
        self.fingerprint: dict[str, Any] = json.loads(json.dumps({"world_size": context.world_size, **fingerprint}))

    def latest(self) -> Checkpoint | None:
        """The newest complete checkpoint of this run, or None; CheckpointMismatchError if it is another run's.

        Rank 0 looks (removing partial ones a killed save left behind) and tells the others."""
        found: list[Checkpoint | str | None] = [None]
        if self.context.is_main:
            try:
                self._remove_partials()
                found[0] = self._newest()
            except (OSError, ValueError, KeyError) as exc:
                found[0] = f"cannot read the checkpoints in {self.directory}: {exc}"
        dist.broadcast_object_list(found, src=0)
        checkpoint = found[0]
        if isinstance(checkpoint, str):
            raise TrimtabError(checkpoint)
        if checkpoint is not None:
            self._check_same_run(checkpoint)
        return checkpoint

    def save(
        self, step: int, state: TrainingState, *, metrics_log: str = "", extra: Mapping[str, Any] | None = None
    ) -> Checkpoint:
        """Write a checkpoint of `state` after `step` steps; returns once it is durable, on every rank.

        `metrics_log` and `extra` are taken from rank 0 (`extra` must be JSON-able)."""
        final = self.directory / f"step-{step:08d}"
        partial = self.directory / f".partial-{final.name}"
        record = self._state_record(step, state, dict(extra or {}))  # fails before anything is written
        if self.context.is_main:
            shutil.rmtree(partial, ignore_errors=True)
            (partial / RNG).mkdir(parents=True)
        dist.barrier()
        writer = dcp.FileSystemWriter(partial / WEIGHTS, sync_files=True)
        dcp.save(_state_dicts(state), storage_writer=writer)
        _write_durably(partial / RNG / f"rank-{self.context.rank:05d}.pt", _save_rng_state)
        dist.barrier()
        if self.context.is_main:
            _write_durably(partial / METRICS_LOG, lambda f: f.write(metrics_log.encode()))
            _write_durably(partial / STATE_FILE, lambda f: f.write(json.dumps(record, indent=1).encode()))
            self._commit(partial, final)
        dist.barrier()
        return Checkpoint(
            final, step, self.fingerprint, record["extra"], metrics_log, record["scheduler"], record.get("companion")
        )

    def restore(self, checkpoint: Checkpoint, state: TrainingState) -> None:
        """Load `checkpoint` into `state` in place (each rank its shards) and this rank's random states."""
        if (state.companion is None) != (checkpoint.companion_scheduler is None):
            raise CheckpointMismatchError(
                f"{checkpoint.path}: {'has' if state.companion is None else 'lacks'} a companion model's state"
                f" that this run {'lacks' if state.companion is None else 'has'}"
            )
        loaded = _state_dicts(state)
        dcp.load(loaded, storage_reader=dcp.FileSystemReader(checkpoint.path / WEIGHTS))
        for prefix, part in state.parts().items():
            set_state_dict(
                part.model,
                part.optimizer,
                model_state_dict=loaded[f"{prefix}model"],
                optim_state_dict=loaded[f"{prefix}optimizer"],
            )
        state.scheduler.load_state_dict(checkpoint.scheduler)
        if state.companion is not None and checkpoint.companion_scheduler is not None:
            state.companion.scheduler.load_state_dict(checkpoint.companion_scheduler)
        _load_rng_state(checkpoint.path / RNG / f"rank-{self.context.rank:05d}.pt")

    def _state_record(self, step: int, state: TrainingState, extra: dict[str, Any]) -> dict[str, Any]:
        record = {
            "format": FORMAT,
            "step": step,
            "saved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "fingerprint": self.fingerprint,
            "scheduler": state.scheduler.state_dict(),
            **({"companion": state.companion.scheduler.state_dict()} if state.companion is not None else {}),
            "extra": extra,
        }
        try:
            return json.loads(json.dumps(record, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise TrimtabError(f"a checkpoint's extra state must be JSON-able (finite numbers): {exc}") from exc

    def _commit(self, partial: Path, final: Path) -> None:
        """Rank 0: make the written tree durable, rename it into place, drop the oldest beyond `keep`."""
        _fsync_tree(partial)
        if final.exists():  # a step saved again (an earlier resume point): the new one replaces it
            shutil.rmtree(final)
        partial.rename(final)
        fsync_dir(self.directory)
        for old in self._complete()[: -self.keep]:
            shutil.rmtree(old)
        fsync_dir(self.directory)

    def _complete(self) -> list[Path]:
        """The complete checkpoints, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _STEP_DIR.fullmatch(p.name) and (p / STATE_FILE).is_file()]
        return sorted(found, key=lambda p: p.name)

    def _newest(self) -> Checkpoint | None:
        complete = self._complete()
        if not complete:
            return None
        path = complete[-1]
        record = json.loads((path / STATE_FILE).read_text())
        metrics_log = (path / METRICS_LOG).read_text()
        return Checkpoint(
            path,
            record["step"],
            record["fingerprint"],
            record["extra"],
            metrics_log,
            record["scheduler"],
            record.get("companion"),
        )

    def _remove_partials(self) -> None:
        if self.directory.is_dir():
            for partial in self.directory.glob(".partial-*"):
                shutil.rmtree(partial)

    def _check_same_run(self, checkpoint: Checkpoint) -> None:
        ours, theirs = self.fingerprint, checkpoint.fingerprint
        differences = [
            f"{key}: {_show(theirs.get(key))} there, {_show(ours.get(key))} here"
            for key in sorted(ours.keys() | theirs.keys())
            if ours.get(key) != theirs.get(key)
        ]
        if differences:
            raise CheckpointMismatchError(
                f"{checkpoint.path} is a checkpoint of a different run; "
                + "; ".join(differences)
                + ". Run with the same settings to resume it, or give another checkpoint directory."
            )


def _state_dicts(state: TrainingState) -> dict[str, Any]:
    """What dcp saves and loads: every part's model and optimizer state, keyed by the part's prefix."""
    dicts: dict[str, Any] = {}
    for prefix, part in state.parts().items():
        dicts[f"{prefix}model"], dicts[f"{prefix}optimizer"] = get_state_dict(part.model, part.optimizer)
    return dicts


def _show(value: Any) -> str:
    text = "(absent)" if value is None else json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _save_rng_state(handle: BinaryIO) -> None:
    legacy_state: tuple[str, np.ndarray, int, int, float] = np.random.get_state(legacy=True)  # type: ignore[assignment]
    kind, keys, position, has_gauss, cached_gaussian = legacy_state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(state, handle)


def _load_rng_state(path: Path) -> None:
    state = torch.load(path, weights_only=True)
    random.setstate(state["python"])
    kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _write_durably(path: Path, write: Callable[[BinaryIO], object]) -> None:
    with path.open("wb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_tree(root: Path) -> None:
    for directory, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(directory, name), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(Path(directory))
