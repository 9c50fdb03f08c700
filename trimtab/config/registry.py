"""Where model versions live and where their serving pointers are kept."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from trimtab.config.base import Section


class RegistryConfig(Section):
    """The model registry: immutable version directories, `current`/`canary` pointers in Redis."""

    root: Path = Field(
        default=Path(".trimtab/registry"), description="Directory holding one sub-directory per version."
    )
    channel: str = Field(
        default="registry:changes",
        description="Redis pub/sub channel (after redis.key_prefix) announcing pointer changes.",
    )
