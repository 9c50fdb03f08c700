"""Loading the effective config: a YAML file, then `TRIMTAB_SECTION__FIELD` environment overrides.

Environment values are read as YAML numbers, booleans, null or flow collections where they are one,
else as plain strings: `TRIMTAB_STACK__START_TIMEOUT_S=5` is a number, `TRIMTAB_REDIS__KEY_PREFIX=app:`
a string. Nested fields take one `__` per level:
`TRIMTAB_KAFKA__TOPICS__FEEDBACK__PARTITIONS=8`.

Files and variables alike read only `true` / `false` as booleans (YAML 1.2), not YAML 1.1's on / off /
yes / no: `metrics: off` is the string our settings mean, never False.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
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


def _set_nested(data: dict[str, Any], keys: tuple[str, ...], value: Any, origin: str) -> None:
    node = data
    for depth, key in enumerate(keys[:-1]):
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"environment {origin}: {'.'.join(keys[: depth + 1])} is not a section")
        node = child
    node[keys[-1]] = value


def load_model(model: type[ModelT], path: Path | None = None, environ: Mapping[str, str] | None = None) -> ModelT:
    """Validate `model` from the YAML file plus environment overrides, or raise ConfigError."""
    environ = os.environ if environ is None else environ
    config_path = resolve_config_path(path, environ)
    data = read_yaml(config_path) if config_path else {}
    overrides = env_overrides(environ)
    for keys, (name, value) in overrides.items():
        _set_nested(data, keys, value, name)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        origins = {keys: f"environment {name}" for keys, (name, _) in overrides.items()}
        file_origin = str(config_path) if config_path else "defaults"
        raise ConfigError(_describe(exc, origins, file_origin)) from None


def _describe(exc: ValidationError, origins: Mapping[tuple[str, ...], str], file_origin: str) -> str:
    lines = [f"invalid configuration ({exc.error_count()} error{'s' if exc.error_count() > 1 else ''}):"]
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        origin = next((src for keys, src in origins.items() if loc[: len(keys)] == keys), file_origin)
        reason = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        got = "" if error["type"] in ("extra_forbidden", "missing") else f" (got {error['input']!r})"
        lines.append(f"  {origin}: {'.'.join(loc)}: {reason}{got}")
    return "\n".join(lines)
