"""Benches run in the simulation: the effective config with the world's evaluation suite selected."""

from __future__ import annotations

from trimtab.config import SuiteConfig, TrimtabConfig, load_config


def simulation_config() -> TrimtabConfig:
    """`load_config()` with `suite.kind: world` (the benches' prompts, gates and rails are the world's)."""
    return load_config().model_copy(update={"suite": SuiteConfig(kind="world")})
