"""Validate a composed config against :mod:`maelstrom_run.config.schema`.

Errors name the full key path, the offending value and, for unknown keys, the
closest valid key: ``backend.resources.nodez: unknown key; did you mean 'nodes'?``.
"""

from __future__ import annotations

import contextvars
import dataclasses
import functools
import importlib
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal, Union

from ..core.errors import ConfigError, did_you_mean
from .schema import DISCRIMINATED, MISSING, RootConf

#: Discriminator value that switches off the schema check of a group (user-defined shapes).
CUSTOM = "custom"


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Type hints of a schema dataclass (evaluated once: they are strings under postponed annotations)."""
    return typing.get_type_hints(cls)


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


#: Set while checking a config only shown (``--cfg job``): values still to be filled (``???``) pass.
_MISSING_OK: contextvars.ContextVar[bool] = contextvars.ContextVar("missing_ok", default=False)


def _check(value: Any, tp: Any, path: str) -> None:
    if tp is Any:
        return
    if isinstance(value, str) and value == MISSING:
        if _MISSING_OK.get():
            return
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
    fields = _fields(cls)
    for key in value:
        if key not in fields and key not in own:
            hint = did_you_mean(str(key), fields)
            if cls is RootConf and "did you mean" not in hint:
                hint += " (an app's own top-level section must be listed in app.sections)"
            raise ConfigError(f"{_join(path, key)}: unknown key{hint}")
    for name, f in fields.items():
        sub = _join(path, name)
        if name not in value:
            if _MISSING_OK.get():
                continue
            if cls is RootConf and name in REQUIRED_GROUPS:
                raise ConfigError(f"{name}: missing config group; choose one with {name}=NAME (not ~{name})")
            if f.default is MISSING:
                raise ConfigError(
                    f"{sub}: missing mandatory value; set it in a config file or with {sub}=VALUE"
                )
            continue
        if path == "" and name in DISCRIMINATED:
            _check_discriminated(value[name], name)
        else:
            _check(value[name], hints[name], sub)
            if "bounds" in f.metadata:
                check_bounds(value[name], f.metadata["bounds"], sub)


def bounds_text(bounds: dict[str, float]) -> str:
    """``>= 1``, ``> 0``, ``in [0, 1)``: a range of :func:`maelstrom_run.config.schema.bounded`."""
    if "ge" in bounds and "lt" in bounds:
        return f"in [{bounds['ge']:g}, {bounds['lt']:g})"
    return " and ".join(
        f"{op} {bounds[k]:g}" for k, op in (("ge", ">="), ("gt", ">"), ("lt", "<")) if k in bounds
    )


def check_bounds(value: Any, bounds: dict[str, float], path: str) -> None:
    """Raise :class:`ConfigError` naming ``path`` when a number (or one of a list's) is out of range."""
    if isinstance(value, list):
        for i, v in enumerate(value):
            check_bounds(v, bounds, f"{path}[{i}]")
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        return
    ok = (
        ("ge" not in bounds or value >= bounds["ge"])
        and ("gt" not in bounds or value > bounds["gt"])
        and ("lt" not in bounds or value < bounds["lt"])
    )
    if not ok:
        raise ConfigError(f"{path}: {value!r} is out of range; it must be {bounds_text(bounds)}")


#: Groups every run needs (the primary config's defaults list, and the app's own choice).
REQUIRED_GROUPS = ("app", "train", "backend", "tracking", "schedule")
#: Groups whose discriminator may be ``custom``: a shape of the user's own, not checked.
_OPEN = ("dataset", "model")
#: Entry point group of backend packages: ``KIND = "package.module:BackendClass"`` (its ``Conf``).
BACKEND_ENTRY_POINTS = "maelstrom_run.backends"


def plugin_backends() -> dict[str, Any]:
    """Backend kinds that installed packages provide (entry points, not loaded yet)."""
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=BACKEND_ENTRY_POINTS)}


def _options(group: str) -> list[str]:
    schemas = DISCRIMINATED[group][1]
    if group == "backend":
        return [*schemas, *sorted(set(plugin_backends()) - set(schemas))]
    return [*schemas, CUSTOM] if group in _OPEN else list(schemas)


def schema_of(group: str, kind: Any) -> type | None:
    """The schema dataclass of a discriminated group's value ``kind`` (None: no such kind)."""
    schemas = DISCRIMINATED[group][1]
    if kind in schemas:
        return schemas[kind]
    if group == "backend" and isinstance(kind, str) and kind in (found := plugin_backends()):
        from .schema import BackendConf

        return getattr(found[kind].load(), "Conf", BackendConf)
    return None


def _check_discriminated(value: Any, group: str) -> None:
    key = DISCRIMINATED[group][0]
    if not isinstance(value, dict):
        raise ConfigError(f"{group}: expected a mapping (choose one with {group}=NAME), got {value!r}")
    kind = value.get(key, MISSING)
    if kind == MISSING:
        raise ConfigError(f"{group}.{key}: missing mandatory value; one of {', '.join(_options(group))}")
    if kind == CUSTOM and group in _OPEN:
        return
    schema = schema_of(group, kind)
    if schema is None:
        hint = did_you_mean(str(kind), _options(group), noun="valid values")
        raise ConfigError(f"{group}.{key}: unknown value {kind!r}{hint}")
    _check_dataclass(value, schema, group)


def typed(value: dict[str, Any], group: str) -> Any:
    """A discriminated group's config as its schema dataclass, validated, with every default filled
    (what a backend receives)."""
    _check_discriminated(value, group)
    schema = schema_of(group, value.get(DISCRIMINATED[group][0]))
    if schema is None:
        raise ConfigError(f"{group}: no schema for {value!r}")
    return _build(schema, value)


def _build(tp: Any, value: Any) -> Any:
    """``value`` (already checked against ``tp``) as instances of the schema's dataclasses."""
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        hints = _hints(tp)
        return tp(
            **{
                f.name: _build(hints[f.name], value[f.name])
                for f in dataclasses.fields(tp)
                if f.name in value
            }
        )
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        for option in typing.get_args(tp):
            if dataclasses.is_dataclass(option) and isinstance(value, dict):
                return _build(option, value)
        return value
    if origin is list and isinstance(value, list):
        (item,) = typing.get_args(tp) or (Any,)
        return [_build(item, v) for v in value]
    if origin is dict and isinstance(value, dict):
        _, item = typing.get_args(tp) or (str, Any)
        return {k: _build(item, v) for k, v in value.items()}
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def validate(config: dict[str, Any], *, missing_ok: bool = False) -> None:
    """Raise :class:`ConfigError` for the first problem found in a resolved config container
    (``missing_ok``: but not for mandatory values still missing, in a config that is only shown)."""
    token = _MISSING_OK.set(missing_ok)
    try:
        _validate(config)
    finally:
        _MISSING_OK.reset(token)


def _validate(config: dict[str, Any]) -> None:
    app = config.get("app")
    own = app.get("sections") if isinstance(app, dict) else None
    _check_dataclass(config, RootConf, "", own if isinstance(own, list) else ())
    for key, check in _checks(config):
        value = _get(config, key)
        if value is not None and not (_MISSING_OK.get() and _has_missing(value)):
            check(value, key)


def _has_missing(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_has_missing(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_missing(v) for v in value)
    return isinstance(value, str) and value == MISSING


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def check_of(dotted: str) -> Any:
    """The check a schema field names in its metadata (``module:function``), imported when first used."""
    module, _, name = dotted.partition(":")
    return getattr(importlib.import_module(module), name)


def _checks(config: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """``(dotted key, check(value, key))`` of every schema field that names a check, for this config's
    choices of the discriminated groups (the packages that own a value's rules register them there:
    labels, schedules, units)."""
    kinds = tuple(
        (group, (config.get(group) or {}).get(key) if isinstance(config.get(group), dict) else None)
        for group, (key, _) in DISCRIMINATED.items()
    )
    return _checks_of(kinds)


@functools.cache
def _checks_of(kinds: tuple[tuple[str, Any], ...]) -> tuple[tuple[str, Any], ...]:
    out = []

    def walk(cls: type, path: str) -> None:
        for f in dataclasses.fields(cls):
            key = _join(path, f.name)
            if "check" in f.metadata:
                out.append((key, check_of(f.metadata["check"])))
            tp = _hints(cls)[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, key)

    walk(RootConf, "")
    for group, kind in kinds:
        schema = schema_of(group, kind) if isinstance(kind, str) else None
        if schema is not None:
            walk(schema, group)
    return tuple(out)


def validate_changes(config: dict[str, Any], keys: Iterable[str]) -> None:
    """Check only the values at dotted ``keys`` of a config that was valid before they changed.

    A sweep validates its base config once and each job's changed values with this (a job that
    changes a discriminator such as ``model.arch`` gets the full :func:`validate`).
    """
    for key in keys:
        found = _schema_type(config, key.split("."))
        if found is None:
            validate(config)
            return
        tp, bounds = found
        node: Any = config
        for part in key.split("."):
            node = node[part]
        _check(node, tp, key)
        if bounds:
            check_bounds(node, bounds, key)
        for checked, check in _checks(config):  # a value with rules of its own, or a mapping holding one
            if checked == key or checked.startswith(key + ".") or key.startswith(checked + "."):
                value = _get(config, checked)
                if value is not None:
                    check(value, checked)


def _schema_type(config: dict[str, Any], parts: list[str]) -> tuple[Any, dict[str, float]] | None:
    """The schema type at a key path and its field's range, ``Any`` for free-form parts, None when
    only a full check will do."""
    tp: Any = RootConf
    bounds: dict[str, float] = {}
    for i, part in enumerate(parts):
        if i == 0 and part in DISCRIMINATED:
            key = DISCRIMINATED[part][0]
            kind = (config.get(part) or {}).get(key)
            if len(parts) < 2 or parts[1] == key:
                return None
            if kind == CUSTOM and part in _OPEN:
                return Any, {}
            tp = schema_of(part, kind)
            if tp is None:
                return None
            continue
        if tp is Any:
            return Any, {}
        bounds = {}
        if dataclasses.is_dataclass(tp):
            hints = _hints(tp)
            if part not in hints:
                own = (config.get("app") or {}).get("sections") or []
                return (Any, {}) if tp is RootConf and part in own else None
            bounds = _fields(tp)[part].metadata.get("bounds", {})
            tp = hints[part]
        elif typing.get_origin(tp) is dict:
            tp = (typing.get_args(tp) or (str, Any))[1]
        else:
            return None
    return tp, bounds


@functools.cache
def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


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


def _free_form(path: str) -> bool:
    """Whether the schema has a mapping of any keys at ``path`` (``tags``, ``tracking.credentials``)."""
    parts = [p for p in path.split(".") if p]
    if not parts:
        return False
    if parts[0] in DISCRIMINATED:
        nodes = [_hints(v).get(parts[1]) for v in DISCRIMINATED[parts[0]][1].values()] if parts[1:] else []
        rest = parts[2:]
    else:
        nodes, rest = [_hints(RootConf).get(parts[0])], parts[1:]
    for node in nodes:
        for part in rest:
            if node is Any:
                break
            if typing.get_origin(node) is dict:
                node = (typing.get_args(node) or (str, Any))[1]
            else:
                node = _hints(node).get(part) if dataclasses.is_dataclass(node) else None
        if typing.get_origin(node) is dict or node is Any:
            return True
    return False


def unknown_key_message(path: str) -> str:
    parent, _, key = path.rpartition(".")
    options = valid_keys(parent)
    if not options and _free_form(parent):  # a mapping of the user's keys: new ones need a '+'
        return f"{path}: not in the config yet; add it with +{path}=VALUE"
    return f"{path}: unknown key{did_you_mean(key, options) if options else ''}"


#: The config groups of maelstrom-run (top-level keys chosen with ``group=option``).
GROUPS = ("app", "train", "dataset", "loader", "model", "backend", "tracking", "schedule", "labels")


def unknown_group_message(group: str) -> str:
    return f"{group}: unknown config group{did_you_mean(group, GROUPS, noun='groups')}"
