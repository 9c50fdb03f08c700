"""Loading the effective config: the model's defaults, a YAML file over them, then `TRIMTAB_SECTION__FIELD`
environment overrides over both.

Each layer merges into the one below key by key, at every depth: a mapping merges into the mapping it
meets, anything else (a scalar, a list) replaces what was there. So a file giving only
`kafka: {topics: {feedback: {partitions: 3}}}` keeps the feedback topic's name, the other topics and the
rest of `kafka`. Mappings that are settings themselves merge too: `auth.tenants` in a file adds to the
default tenant. Each validation error names the layer that set the offending key: the variable, the
file, or "defaults".

Environment values are read as YAML numbers, booleans, null or flow collections where they are one,
else as plain strings: `TRIMTAB_STACK__START_TIMEOUT_S=5` is a number, `TRIMTAB_REDIS__KEY_PREFIX=app:`
a string. Nested fields take one `__` per level, and a variable sets just its field:
`TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS=8` keeps the topic's name. Deeper variables apply after
shallower ones, so `TRIMTAB_A__B__C` refines a flow mapping given by `TRIMTAB_A__B`.

Files and variables alike read only `true` / `false` as booleans (YAML 1.2), not YAML 1.1's on / off /
yes / no: `metrics: off` is the string our settings mean, never False.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from trimtab.errors import TrimtabError

ENV_PREFIX = "TRIMTAB_"
CONFIG_FILE_ENV = "TRIMTAB_CONFIG"
DEFAULT_CONFIG_FILE = Path("trimtab.yaml")

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(TrimtabError):
    """The config cannot be used; the message names the key, where it came from and why."""


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans (see the module docstring)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader: builds plain data only


def resolve_config_path(path: Path | None, environ: Mapping[str, str]) -> Path | None:
    """The file to read: the explicit one, else $TRIMTAB_CONFIG, else ./trimtab.yaml if present."""
    if path is not None:
        return path
    if environ.get(CONFIG_FILE_ENV):
        return Path(environ[CONFIG_FILE_ENV])
    return DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from exc
    try:
        data = _yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return data


def env_overrides(environ: Mapping[str, str]) -> dict[tuple[str, ...], tuple[str, Any]]:
    """Dotted key path -> (variable name, parsed value) for every TRIMTAB_A__B variable."""
    overrides: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
        if not all(keys):
            raise ConfigError(f"environment {name}: empty key segment (use one '__' between levels)")
        overrides[keys] = (name, parse_env_value(raw))
    return overrides


def parse_env_value(raw: str) -> Any:
    """Numbers, booleans and null as YAML reads them; `[...]`/`{...}` as YAML flow collections; anything
    else verbatim, so a value like `trimtab:` stays a string instead of becoming a mapping."""
    text = raw.strip()
    try:
        value = _yaml(text) if text else raw
    except yaml.YAMLError:
        return raw
    if text[:1] in "[{" or value is None or isinstance(value, bool | int | float):
        return value
    return raw


def _set_nested(
    data: dict[str, Any],
    keys: tuple[str, ...],
    value: Any,
    origin: str,
    layers: Sequence[tuple[str, Mapping[str, Any]]],
) -> None:
    """Put `value` at `keys` in `data`, merging it into a mapping already there. The levels above must be
    sections (mappings): the error names the layer (see `_origin`) that made one something else."""
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            path = keys[: depth + 1]
            raise ConfigError(
                f"environment {origin}: {'.'.join(path)} is not a section ({child!r}, from {_origin(path, layers)})"
            )
        node = child
    current = node.get(keys[-1])
    if isinstance(value, Mapping):
        value = _merge(current if isinstance(current, Mapping) else {}, value)
    node[keys[-1]] = value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base` key by key at every depth: mappings merge, anything else replaces. New
    dicts throughout, so that setting into the result never changes `over`."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping):
            below = merged.get(key)
            merged[key] = _merge(below if isinstance(below, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def _nest(keys: tuple[str, ...], value: Any) -> dict[str, Any]:
    """The mapping that one environment override lays on the config: {"a": {"b": value}} for a__b."""
    nested: Any = value
    for key in reversed(keys):
        nested = {key: nested}
    return dict(nested)


def load_model(model: type[ModelT], path: Path | None = None, environ: Mapping[str, str] | None = None) -> ModelT:
    """Validate `model` from its defaults, the YAML file over them and the environment over both (see the
    module docstring), or raise ConfigError naming, for each error, the source that set the key."""
    environ = os.environ if environ is None else environ
    config_path = resolve_config_path(path, environ)
    # Fields without a default (none at the top of TrimtabConfig) are simply absent here.
    data = model.model_construct().model_dump()
    layers: list[tuple[str, Mapping[str, Any]]] = []
    if config_path:
        layers.append((str(config_path), read_yaml(config_path)))
        data = _merge(data, layers[0][1])
    # Shallower variables first, so that a deeper one refines a mapping set by a shallower one.
    for keys, (name, value) in sorted(env_overrides(environ).items(), key=lambda item: len(item[0])):
        _set_nested(data, keys, value, name, layers)
        layers.append((f"environment {name}", _nest(keys, value)))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, layers)) from None


def _describe(exc: ValidationError, layers: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    lines = [f"invalid configuration ({exc.error_count()} error{'s' if exc.error_count() > 1 else ''}):"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        # A missing field is the fault of whoever gave its section without it.
        origin = _origin(loc[:-1] if error["type"] == "missing" else loc, layers)
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        got = "" if error["type"] in ("extra_forbidden", "missing") else f" (got {error['input']!r})"
        lines.append(f"  {origin}: {'.'.join(loc)}: {reason}{got}")
    return "\n".join(lines)


_ABSENT = object()


def _origin(path: tuple[str, ...], layers: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Who set the value at `path`: the last layer that set it or a value above it, else "defaults". A
    section (a rule across its fields failed) names every layer that set a field in it, up to the last
    that replaced it whole."""
    names: list[str] = []
    for name, layer in reversed(layers):
        node = _reach(layer, path)
        if node is _ABSENT:
            continue
        names.insert(0, name)
        if not isinstance(node, Mapping):
            break
    return " and ".join(names) or "defaults"


def _reach(layer: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    """What `layer` holds at `path`, or the non-mapping value it set above `path` (which replaced all below
    it), or _ABSENT when the layer says nothing there."""
    node: Any = layer
    for key in path:
        if not isinstance(node, Mapping):
            return node
        node = next((value for name, value in node.items() if str(name) == key), _ABSENT)
        if node is _ABSENT:
            return _ABSENT
    return node
