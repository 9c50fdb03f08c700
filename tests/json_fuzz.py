"""Any JSON, and valid bodies edited into invalid ones: the strategies the HTTP fuzz tests share (serving,
the router in front of it, the feedback service)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def with_edits(body: dict[str, Any], edits: list[tuple[str, Any]]) -> dict[str, Any]:
    """`body` with each (key, value) set, or removed where the value is None."""
    edited = dict(body)
    for key, value in edits:
        if value is None:
            edited.pop(key, None)
        else:
            edited[key] = value
    return edited


def edited(
    bodies: st.SearchStrategy[dict[str, Any]],
    keys: st.SearchStrategy[str],
    values: st.SearchStrategy[Any] = json_values,
) -> st.SearchStrategy[dict[str, Any]]:
    """Valid bodies with up to three of `keys` replaced by `values`, removed or added."""
    return st.builds(with_edits, bodies, st.lists(st.tuples(keys, st.none() | values), max_size=3))
