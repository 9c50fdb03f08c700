"""Choosing the suite by configuration: `suite.kind: files` reads the operator's JSONL; any other kind
is a plug-in, a function `(TrimtabConfig) -> EvaluationSuite` registered under the `trimtab.suites`
entry-point group (the simulation registers `world`; a package of the operator's can register its own).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from trimtab.config.loader import ConfigError
from trimtab.jsonl import RecordError
from trimtab.suite.contract import EvaluationSuite
from trimtab.suite.files import file_suite

if TYPE_CHECKING:
    from trimtab.config import TrimtabConfig

ENTRY_POINT_GROUP = "trimtab.suites"


class SuiteError(ConfigError):
    """The configured suite cannot be loaded; the message says which part and why."""


def load_suite(config: TrimtabConfig) -> EvaluationSuite:
    """The suite `config.suite` describes, or SuiteError (a ConfigError: `trimtab` exits 2)."""
    kind = config.suite.kind
    try:
        if kind == "files":
            return file_suite(config.suite)
        return _plugin(kind)(config)
    except RecordError as exc:
        raise SuiteError(f"suite: {exc}") from None


def _plugin(kind: str) -> Callable[[TrimtabConfig], EvaluationSuite]:
    found = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    if kind not in found:
        known = ", ".join(["files", *sorted(found)])
        raise SuiteError(
            f"suite.kind {kind!r}: no such suite (known: {known}; plug-ins register under {ENTRY_POINT_GROUP})"
        )
    factory: Callable[[TrimtabConfig], EvaluationSuite] = found[kind].load()
    return factory
