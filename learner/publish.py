"""A trained model becomes a registry version by one path, whoever trained it (`trimtab learn`, the
online learner's policy and reward model, the batch baseline of bench/loop.py):

    with exported(model, contents, context) as out:  # every rank: the weights' gather
        if out is not None:                           # rank 0: an HF directory in a scratch directory
            ...                                       # (the online learner gates the candidate here)
            version_id = publish(registry, out, record)

The gather is an FSDP2 collective, so every rank enters `exported`; rank 0 alone writes the directory
(the weights as `learner.models.export` writes them, the tokenizer, any extra files) and publishes it
with its manifest fields. Metrics that are not finite (NaN: nothing was measured) are left out.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from transformers import PreTrainedTokenizerBase

from learner.distributed import DistContext, full_state_dict
from learner.models import export
from trimtab.config.learner import LoraSettings
from trimtab.registry import OffsetRange, Registry

Phase = Callable[[str], AbstractContextManager[object]]  # times a named step ("gather_weights", "export")


@dataclass(frozen=True)
class Contents:
    """What a version's directory holds."""

    tokenizer: PreTrainedTokenizerBase
    lora: LoraSettings  # enabled: the weights are an adapter (a reward model's is merged: it is published whole)
    reward_model: bool
    files: Mapping[str, str] = field(default_factory=dict)  # extra files: name -> text


@dataclass(frozen=True)
class VersionRecord:
    """A version's manifest fields (`Registry.publish`)."""

    parent: str | None
    base: str | None  # a LoRA version's full base version
    algorithm: str
    config: dict[str, object]
    data_source: str
    offsets: list[OffsetRange] = field(default_factory=list)
    event_counts: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


@contextmanager
def exported(
    model: nn.Module,
    contents: Contents,
    context: DistContext,
    *,
    directory: Path | None = None,  # where rank 0 writes (None: a scratch directory, removed afterwards)
    phase: Phase = lambda name: nullcontext(),
) -> Iterator[Path | None]:
    """Gather `model`'s full weights (every rank); on rank 0 write them with `contents` as an HF directory
    and yield it (None on the other ranks)."""
    with phase("gather_weights"):
        weights = full_state_dict(model)
    if not context.is_main:
        yield None
        return
    with _writable(directory) as out:
        with phase("export"):
            export(weights, model.config, out, reward_model=contents.reward_model, lora=contents.lora)
            contents.tokenizer.save_pretrained(out)
            for name, text in contents.files.items():
                (out / name).write_text(text)
        yield out


def publish(registry: Registry, out: Path, record: VersionRecord) -> str:
    """Publish the directory `out` as a new version with `record`'s manifest fields; its id."""
    manifest = registry.publish(
        out,
        parent=record.parent,
        base=record.base,
        algorithm=record.algorithm,
        config=record.config,
        data_source=record.data_source,
        offsets=record.offsets,
        event_counts=record.event_counts,
        metrics={name: value for name, value in record.metrics.items() if math.isfinite(value)},
    )
    return manifest.id


@contextmanager
def _writable(directory: Path | None) -> Iterator[Path]:
    if directory is not None:
        yield directory
        return
    with tempfile.TemporaryDirectory(prefix="trimtab-version-") as scratch:
        out = Path(scratch) / "version"
        out.mkdir()
        yield out
