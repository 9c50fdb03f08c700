"""The registry's version directories: published atomically, immutable, ids never reused.

    <registry.root>/<version_id>/      a flat Hugging Face directory + manifest.json
    <registry.root>/.staging-<id>/     a version being written (never read)

Publishing copies into a staging directory, fsyncs every file and the directory, then renames it into
place, so a reader sees a whole version or none. Files are made read-only. Ids are ULIDs (`ver_...`):
unique by construction, so an id is never reused even after a version directory is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from trimtab.durable import fsync_dir
from trimtab.errors import TrimtabError
from trimtab.ids import minted_at_ms, new_id
from trimtab.registry.manifest import MANIFEST, Manifest, OffsetRange, checksums, sha256_file

FULL_FILES = ("config.json",)
LORA_FILES = ("adapter_config.json", "adapter_model.safetensors")
READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH


class RegistryError(TrimtabError):
    """A version is unknown, malformed or damaged; the message names it and says what is wrong."""


def detect_kind(directory: Path) -> Literal["full", "lora", "reward"]:
    """'full' for an HF model directory with safetensors weights, 'reward' when that model is a
    sequence classifier (a reward model: never served), 'lora' for a PEFT adapter."""
    if all((directory / name).is_file() for name in LORA_FILES):
        return "lora"
    if all((directory / name).is_file() for name in FULL_FILES) and any(directory.glob("*.safetensors")):
        architectures = json.loads((directory / "config.json").read_text()).get("architectures") or []
        return "reward" if any(name.endswith("ForSequenceClassification") for name in architectures) else "full"
    raise RegistryError(
        f"{directory} is neither a Hugging Face model directory (config.json + *.safetensors) "
        f"nor a PEFT LoRA adapter ({' + '.join(LORA_FILES)})"
    )


VERSION_PREFIX = "ver_"


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, version_id: str) -> Path:
        """The version's directory; RegistryError for anything but a version id ("ver_" + a ULID), so that
        no name a caller passes ("../x", an empty or NUL-bearing string) reaches the file system."""
        if minted_at_ms(version_id, VERSION_PREFIX) is None:
            raise RegistryError(f"unknown version {version_id!r}: not a version id (ver_ followed by a ULID)")
        return self.root / version_id

    def publish(
        self,
        source: Path,
        *,
        parent: str | None,
        algorithm: str,
        base: str | None = None,
        config: dict[str, Any] | None = None,
        data_source: str = "",
        offsets: list[OffsetRange] | None = None,
        event_counts: dict[str, int] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> Manifest:
        """Copy `source` into the registry as a new immutable version and return its manifest."""
        kind = detect_kind(source)
        if kind == "lora" and base is None:
            raise RegistryError("a LoRA version needs `base`: the full version it applies to")
        if any(p.is_dir() for p in source.iterdir()):
            raise RegistryError(f"{source} has sub-directories; a version is a flat Hugging Face directory")
        version_id = new_id(VERSION_PREFIX)
        staging = self.root / f".staging-{version_id}"
        staging.mkdir(parents=True)
        try:
            for file in sorted(p for p in source.iterdir() if p.is_file() and p.name != MANIFEST):
                shutil.copyfile(file, staging / file.name)
            manifest = Manifest(
                id=version_id,
                kind=kind,
                parent=parent,
                base=base,
                algorithm=algorithm,
                config=config or {},
                data_source=data_source,
                offsets=offsets or [],
                event_counts=event_counts or {},
                metrics=metrics or {},
                files=checksums(staging),
            )
            (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
            _seal(staging)
            staging.rename(self.path(version_id))
            fsync_dir(self.root)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return manifest

    def version_of(self, directory: Path) -> str | None:
        """The version id when `directory` is one of this registry's version directories, else None."""
        resolved = directory.resolve()
        is_version = resolved.parent == self.root.resolve() and (resolved / MANIFEST).is_file()
        return resolved.name if is_version else None

    def import_once(self, directory: Path) -> Manifest:
        """The version holding `directory`'s model: itself if it is a version, else the import of it with
        the same files (checksums), published now if there is none yet."""
        version_id = self.version_of(directory)
        if version_id is not None:
            return self.get(version_id)
        source, files = str(directory.resolve()), checksums(directory)
        for manifest in self.versions():
            if manifest.algorithm == "import" and manifest.data_source == source and manifest.files == files:
                return manifest
        return self.publish(directory, parent=None, algorithm="import", data_source=source)

    def get(self, version_id: str) -> Manifest:
        path = self.path(version_id) / MANIFEST
        try:
            return Manifest.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise RegistryError(f"unknown version {version_id!r} (no {path})") from None
        except ValidationError as exc:
            raise RegistryError(f"version {version_id}: damaged manifest: {exc}") from exc

    def versions(self) -> list[Manifest]:
        """Every version, oldest first (ids sort by creation time)."""
        if not self.root.is_dir():
            return []
        return [self.get(p.name) for p in sorted(self.root.iterdir()) if p.is_dir() and not p.name.startswith(".")]

    def verify(self, version_id: str) -> list[str]:
        """What is wrong with a version's files (missing, altered, unexpected); empty when it is intact."""
        manifest = self.get(version_id)
        directory = self.path(version_id)
        problems = [f"{name}: missing" for name in manifest.files if not (directory / name).is_file()]
        problems += [
            f"{name}: checksum mismatch"
            for name, digest in manifest.files.items()
            if (directory / name).is_file() and sha256_file(directory / name) != digest
        ]
        extra = {p.name for p in directory.iterdir()} - set(manifest.files) - {MANIFEST}
        problems += [f"{name}: not in the manifest" for name in sorted(extra)]
        return problems


def _seal(directory: Path) -> None:
    """fsync every file and the directory, and make the files read-only: versions are immutable."""
    for file in directory.iterdir():
        with file.open("rb") as handle:
            os.fsync(handle.fileno())
        file.chmod(READ_ONLY)
    fsync_dir(directory)
