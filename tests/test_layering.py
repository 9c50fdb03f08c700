"""The layering, checked on every import statement of the source tree (function-level imports too):

- the shared core (`trimtab`, except `trimtab.app` and `trimtab.simulation`) imports no component, no
  composition and no simulation: it is what everything else stands on;
- a component (serving, feedback, learner, guardrails) never imports another component, guardrails
  excepted (serving's rails, the learner's gate and feedback filter use it), nor the composition
  layer, nor the simulation: the product reaches the world only as a suite plug-in chosen by config;
- the simulation never imports the composition layer.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

COMPONENTS = ("serving", "feedback", "learner", "guardrails")
SHARED_BY_COMPONENTS = ("guardrails",)
APP, SIMULATION = "trimtab.app", "trimtab.simulation"


def imported_modules(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `path`; `from . import x` resolved against the file's package."""
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                yield node.lineno, f"{base}.{node.module}" if node.module else base
            elif node.module:
                yield node.lineno, node.module


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def sources(*packages: str) -> list[Path]:
    return sorted(p for package in packages for p in (REPO / package).rglob("*.py") if "v1" not in p.parts)


def forbidden(path: Path) -> list[str]:
    """What `path` may not import, by the rules above."""
    module = module_of(path)
    if within(module, APP):
        return []
    if within(module, SIMULATION):
        return [APP]
    if within(module, "trimtab"):
        return [*COMPONENTS, APP, SIMULATION]
    own = module.split(".")[0]
    others = [c for c in COMPONENTS if c != own and c not in SHARED_BY_COMPONENTS]
    if own in SHARED_BY_COMPONENTS:
        others = [c for c in COMPONENTS if c != own]
    return [*others, APP, SIMULATION]


@pytest.mark.parametrize("path", sources("trimtab", *COMPONENTS), ids=lambda p: str(p.relative_to(REPO)))
def test_each_module_imports_only_what_its_layer_may(path: Path) -> None:
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imported_modules(path)
        for banned in forbidden(path)
        if within(name, banned)
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports_and_would_catch_a_component_importing_the_world(
    tmp_path: Path,
) -> None:
    offender = REPO / "learner" / "_layering_probe.py"  # parsed, never imported
    offender.write_text("def f():\n    from trimtab.simulation.world import World\n    import serving.server\n")
    try:
        found = [name for _, name in imported_modules(offender) if any(within(name, b) for b in forbidden(offender))]
    finally:
        offender.unlink()
    assert found == ["trimtab.simulation.world", "serving.server"]
