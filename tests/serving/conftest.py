"""Fixtures of the serving tests: synthetic versions to swap between (the serving process itself is
shared with tests/loop: tests/serving_process.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.serving_process import ServingProcess
from trimtab.registry import Registry
from trimtab.testing import perturbed_copy, random_lora


@dataclass(frozen=True)
class SwapVersions:
    """Versions published for the swap tests: the initial one, a full-weight variant, a LoRA on the
    initial one, and a damaged copy."""

    initial: str
    full: str
    lora: str
    damaged: str
    registry: Registry


@pytest.fixture(scope="session")
def versions(serving: ServingProcess, tmp_path_factory: pytest.TempPathFactory) -> SwapVersions:
    registry = Registry(serving.config.registry.root)
    initial = registry.versions()[0]
    source = registry.path(initial.id)
    work = tmp_path_factory.mktemp("versions")
    full = registry.publish(perturbed_copy(source, work / "full", seed=1), parent=initial.id, algorithm="test-noise")
    lora = registry.publish(
        random_lora(source, work / "lora", seed=2), parent=initial.id, base=initial.id, algorithm="test-lora"
    )
    damaged = registry.publish(perturbed_copy(source, work / "damaged", seed=3), parent=initial.id, algorithm="test")
    weights = registry.path(damaged.id) / "model.safetensors"
    weights.chmod(0o644)
    with weights.open("r+b") as handle:  # flip bytes inside a tensor: the checksum no longer matches
        handle.seek(-64, 2)
        handle.write(b"\x7f" * 16)
    return SwapVersions(initial.id, full.id, lora.id, damaged.id, registry)
