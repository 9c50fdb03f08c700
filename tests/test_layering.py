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


def imported_modules(source: str, module: str) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in `source`, the text of `module`; `from . import x` resolved against
    the module's package."""
    package = module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source, filename=module)):
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


def forbidden(module: str) -> list[str]:
    """What `module` may not import, by the rules above."""
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
    module = module_of(path)
    bad = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for line, name in imported_modules(path.read_text(), module)
        for banned in forbidden(module)
        if within(name, banned)
    ]
    assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports_and_would_catch_a_component_importing_the_world() -> None:
    probe = (
        "def f():\n    from trimtab.simulation.world import World\n    import serving.server\n    from . import data\n"
    )
    found = [name for _, name in imported_modules(probe, "learner.probe")]
    assert found == ["trimtab.simulation.world", "serving.server", "learner"]
    assert [name for name in found if any(within(name, banned) for banned in forbidden("learner.probe"))] == [
        "trimtab.simulation.world",
        "serving.server",
    ]
