"""A version's manifest: what it is, where it came from, what it measured, and its files' checksums."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST = "manifest.json"
# In a version the online learner published: the ids of the feedback its round trained on (new items only),
# read by the demo's freshness report and `trimtab lineage`.
FEEDBACK_IDS = "feedback_ids.json"
CHUNK = 1 << 20


class OffsetRange(BaseModel):
    """Kafka records [start, end) of one partition that a version was trained on."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    topic: str
    partition: int
    start: int
    end: int


class Manifest(BaseModel):
    """Written once with the version; never changed (decisions about a version are version events)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    kind: Literal["full", "lora", "reward"]
    parent: str | None = Field(description="The version this one was trained from; None for an imported model.")
    base: str | None = Field(default=None, description="For a LoRA adapter: the full version it applies to.")
    algorithm: str = Field(description="'import', 'sft', 'dpo', ...")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    config: dict[str, Any] = Field(default_factory=dict, description="The training config that produced it.")
    data_source: str = Field(default="", description="Where the training data came from (a file, a topic).")
    offsets: list[OffsetRange] = Field(default_factory=list)
    event_counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    files: dict[str, str] = Field(description="File name -> sha256 of every file in the version directory.")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def checksums(directory: Path) -> dict[str, str]:
    """sha256 of every regular file directly in `directory` (HF checkpoints are flat)."""
    return {p.name: sha256_file(p) for p in sorted(directory.iterdir()) if p.is_file() and p.name != MANIFEST}
