"""Guardrails fixtures: the real NeMo Guardrails runtime on the bundled configuration, built once per
run (the MiniLM embedder takes seconds to load), and copies of the configuration to edit."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from guardrails.runtime import BUNDLED_CONFIG, Guardrails
from guardrails.semantic import Embedder
from trimtab.config import SuiteConfig, TrimtabConfig
from trimtab.simulation.suite import world_suite
from trimtab.simulation.world import World, default_world
from trimtab.suite import EvaluationSuite, ProtectedTerms

Edit = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="session")
def world() -> World:
    return default_world()


@pytest.fixture(scope="session")
def suite() -> EvaluationSuite:
    """The world's evaluation suite: its red team, and the secret and insults the output rails stop."""
    return world_suite(TrimtabConfig(suite=SuiteConfig(kind="world")))


@pytest.fixture(scope="session")
def protected(suite: EvaluationSuite) -> ProtectedTerms:
    return suite.protected


@pytest.fixture(scope="session")
def embedder() -> Iterator[Embedder]:
    embedder = Embedder()
    yield embedder
    embedder.close()


@pytest.fixture(scope="session")
def rails(embedder: Embedder, protected: ProtectedTerms) -> Guardrails:
    return Guardrails.load(BUNDLED_CONFIG, embedder, protected)


def copy_config(target: Path, edit: Edit | None = None) -> Path:
    """The bundled configuration copied to `target`, its config.yml changed by `edit` (a dict edit)."""
    shutil.copytree(BUNDLED_CONFIG, target, dirs_exist_ok=True)
    if edit is not None:
        edit_config(target, edit)
    return target


def edit_config(config_dir: Path, edit: Edit) -> None:
    path = config_dir / "config.yml"
    data = yaml.safe_load(path.read_text())
    edit(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.fixture
def rails_with(tmp_path: Path, embedder: Embedder, protected: ProtectedTerms) -> Callable[[Edit], Guardrails]:
    """Rails built from a copy of the bundled configuration with `custom_data` changed."""

    def build(edit: Edit) -> Guardrails:
        directory = copy_config(tmp_path / f"rails-{len(list(tmp_path.iterdir()))}", edit)
        return Guardrails.load(directory, embedder, protected)

    return build
