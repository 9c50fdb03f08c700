"""Scorer entry points: `module:function`, called with (prompt messages, response) and returning a float.

A scorer is the operator's code, so everything it does wrong is reported as a `JudgeError` naming the
entry point: an import that fails, a name that is not a function, an exception, a value that is not a
finite number. Nothing it returns is trusted unchecked: a NaN reward would pass every comparison.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from numbers import Real

from trimtab.config.loader import ConfigError
from trimtab.jsonl import Messages, last_user_turn
from trimtab.suite.contract import Scorer


class JudgeError(ConfigError):
    """A judge cannot be used; the message names the entry point and what went wrong."""


def load_scorer(spec: str) -> Scorer:
    """The function `spec` names ('package.module:function'), wrapped by `checked`."""
    module_name, colon, attribute = spec.partition(":")
    if not colon or not module_name or not attribute:
        raise JudgeError(f"scorer {spec!r}: expected 'module:function', e.g. 'mypkg.verify:score'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # the operator's module: any error on import is theirs to see
        raise JudgeError(f"scorer {spec}: cannot import {module_name}: {type(exc).__name__}: {exc}") from None
    function: object = module
    for part in attribute.split("."):
        function = getattr(function, part, None)
        if function is None:
            raise JudgeError(f"scorer {spec}: {module_name} has no attribute {attribute!r}")
    if not callable(function):
        raise JudgeError(f"scorer {spec}: {attribute} is a {type(function).__name__}, not a function")
    return checked(function, spec)


def checked(function: Callable[[Messages, str], object], name: str) -> Scorer:
    """`function` with its failures turned into JudgeErrors naming `name` and the prompt it failed on."""

    def score(prompt: Messages, response: str) -> float:
        try:
            value = function(prompt, response)
        except Exception as exc:
            raise JudgeError(
                f"scorer {name} raised {type(exc).__name__}: {exc} (prompt {last_user_turn(prompt)[:60]!r})"
            ) from exc
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
            raise JudgeError(
                f"scorer {name} returned {value!r} for prompt {last_user_turn(prompt)[:60]!r}: a finite number"
                " is required"
            )
        return float(value)

    return score
