"""Validate a composed config against :mod:`maelstrom_run.config.schema`.

Errors name the full key path, the offending value and, for unknown keys, the
closest valid key: ``backend.resources.nodez: unknown key; did you mean 'nodes'?``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

from .schema import DISCRIMINATED, MISSING, RootConf

#: Discriminator value that switches off the schema check of a group (user-defined shapes).
CUSTOM = "custom"


class ConfigError(ValueError):
    """A user error in a configuration; the message is one line naming the key path."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Type hints of a schema dataclass (evaluated once: they are strings under postponed annotations)."""
    return typing.get_type_hints(cls)


def _closest(key: str, options: typing.Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else f"; valid keys: {', '.join(sorted(options))}"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is not None:
        return {list: "a list", dict: "a mapping"}.get(origin, str(tp))
    return {
        type(None): "null",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true/false",
    }.get(tp, getattr(tp, "__name__", str(tp)))


def _check(value: Any, tp: Any, path: str) -> None:
    if tp is Any:
        return
    if isinstance(value, str) and value == MISSING:
        raise ConfigError(f"{path}: missing mandatory value; set it in a config file or with {path}=VALUE")
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                _check(value, option, path)
                return
            except ConfigError as exc:
                # an error deeper inside a mapping is the more useful one
                if len(options) == 1 and not str(exc).startswith(f"{path}: "):
                    raise
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{path}: {value!r} is not one of {_type_name(tp)}")
        return
    if tp is type(None):
        if value is not None:
            raise ConfigError(f"{path}: expected null, got {value!r}")
        return
    if dataclasses.is_dataclass(tp):
        _check_dataclass(value, tp, path)
        return
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        for i, v in enumerate(value):
            _check(v, item, f"{path}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        _, item = typing.get_args(tp) or (str, Any)
        for k, v in value.items():
            _check(v, item, f"{path}.{k}")
        return
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif tp is str:
        ok = isinstance(value, str)
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")


def _check_dataclass(value: Any, cls: type, path: str, own: Iterable[str] = ()) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: expected a mapping, got {value!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in value:
        if key not in fields and key not in own:
            hint = _closest(str(key), fields)
            if cls is RootConf and "did you mean" not in hint:
                hint += " (an app's own top-level section must be listed in app.sections)"
            raise ConfigError(f"{_join(path, key)}: unknown key{hint}")
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in value:
            if f.default is MISSING:
                raise ConfigError(
                    f"{sub}: missing mandatory value; set it in a config file or with {sub}=VALUE"
                )
            continue
        if path == "" and name in DISCRIMINATED:
            _check_discriminated(value[name], name)
        else:
            _check(value[name], hints[name], sub)


def _check_discriminated(value: Any, group: str) -> None:
    key, schemas = DISCRIMINATED[group]
    if not isinstance(value, dict):
        raise ConfigError(f"{group}: expected a mapping (choose one with {group}=NAME), got {value!r}")
    kind = value.get(key, MISSING)
    if kind == MISSING:
        raise ConfigError(f"{group}.{key}: missing mandatory value; one of {', '.join([*schemas, CUSTOM])}")
    if kind == CUSTOM:
        return
    if kind not in schemas:
        options = [*schemas, CUSTOM]
        hint = _closest(str(kind), options).replace("valid keys", "valid values")
        raise ConfigError(f"{group}.{key}: unknown value {kind!r}{hint}")
    _check_dataclass(value, schemas[kind], group)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def validate(config: dict[str, Any]) -> None:
    """Raise :class:`ConfigError` for the first problem found in a resolved config container."""
    app = config.get("app")
    own = app.get("sections") if isinstance(app, dict) else None
    _check_dataclass(config, RootConf, "", own if isinstance(own, list) else ())
    limit = ((config.get("backend") or {}).get("resources") or {}).get("time")
    if limit is not None:
        from .units import time_limit_seconds

        time_limit_seconds(limit)
    from ..labels.taxonomy import check as check_labels
    from ..schedule.timing import check as check_schedule

    check_labels(config.get("labels"))
    check_schedule(config.get("schedule") or {})


def validate_changes(config: dict[str, Any], keys: Iterable[str]) -> None:
    """Check only the values at dotted ``keys`` of a config that was valid before they changed.

    A sweep validates its base config once and each job's changed values with this (a job that
    changes a discriminator such as ``model.arch`` gets the full :func:`validate`).
    """
    for key in keys:
        tp = _schema_type(config, key.split("."))
        if tp is None:
            validate(config)
            return
        node: Any = config
        for part in key.split("."):
            node = node[part]
        _check(node, tp, key)
        if key == "backend.resources.time" and node is not None:
            from .units import time_limit_seconds

            time_limit_seconds(node)


def _schema_type(config: dict[str, Any], parts: list[str]) -> Any:
    """The schema type at a key path, ``Any`` for free-form parts, None when only a full check will do."""
    tp: Any = RootConf
    for i, part in enumerate(parts):
        if i == 0 and part in DISCRIMINATED:
            key, schemas = DISCRIMINATED[part]
            kind = (config.get(part) or {}).get(key)
            if len(parts) < 2 or parts[1] == key or (kind not in schemas and kind != CUSTOM):
                return None
            if kind == CUSTOM:
                return Any
            tp = schemas[kind]
            continue
        if tp is Any:
            return Any
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                return (
                    Any
                    if tp is RootConf and part in ((config.get("app") or {}).get("sections") or [])
                    else None
                )
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = (typing.get_args(tp) or (str, Any))[1]
        else:
            return None
    return tp


def valid_keys(path: str) -> list[str]:
    """Keys the schema allows under a dotted ``path`` (empty when the path is free-form)."""
    node: Any = RootConf
    parts = [p for p in path.split(".") if p]
    for i, part in enumerate(parts):
        if i == 0 and part in DISCRIMINATED:
            variants = DISCRIMINATED[part][1].values()
            if len(parts) == 1:
                return sorted({f.name for v in variants for f in dataclasses.fields(v)})
            node = next(
                (_hints(v).get(parts[1]) for v in variants if parts[1] in _hints(v)),
                None,
            )
            return valid_keys_of(node, parts[2:])
        hints = _hints(node) if dataclasses.is_dataclass(node) else {}
        if part not in hints:
            return []
        node = hints[part]
    return valid_keys_of(node, [])


def valid_keys_of(node: Any, rest: list[str]) -> list[str]:
    for part in rest:
        hints = _hints(node) if dataclasses.is_dataclass(node) else {}
        node = hints.get(part)
    if dataclasses.is_dataclass(node):
        return [f.name for f in dataclasses.fields(node)]
    return []


def unknown_key_message(path: str) -> str:
    parent, _, key = path.rpartition(".")
    options = valid_keys(parent)
    if not options and path.split(".")[0] in ("labels", "tags"):  # free-form: new keys need a '+'
        return f"{path}: not in the config yet; add it with +{path}=VALUE"
    return f"{path}: unknown key{_closest(key, options) if options else ''}"


#: The config groups of maelstrom-run (top-level keys chosen with ``group=option``).
GROUPS = ("app", "train", "dataset", "loader", "model", "backend", "tracking", "schedule", "labels")


def unknown_group_message(group: str) -> str:
    return f"{group}: unknown config group{_closest(group, GROUPS).replace('valid keys', 'groups')}"
