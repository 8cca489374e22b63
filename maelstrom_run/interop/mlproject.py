"""MLflow Projects: an MLproject entry point as an ``app`` config, and an app as an MLproject.

Import (:func:`to_app`): the entry point's command becomes ``app.command``, run by the entry
``maelstrom_run.interop.command:main``; its parameters become ``app.params`` (typed defaults;
no default, or ``null``, is a mandatory value as ``mlflow run`` requires one) and
``app.param_types``. Types are MLflow's ``string``, ``float``, ``int``, ``path``, ``uri`` and
those real projects write (``str``, ``integer``, ``double``, ``bool``, ``boolean``); a default of
``None`` (the string) is ``null`` and reaches the command as ``None``, as ``mlflow run`` passes it.
A default that does not fit its type is kept as a string (``mlflow run`` would pass it as it is).

Export (:func:`to_mlproject`): an MLproject whose ``main`` entry point runs ``maelstrom-run``
with the same overrides; each value override is a parameter of its type with the value as default.
"""

from __future__ import annotations

import os
import re
import shlex
import string
import urllib.parse
from pathlib import Path
from typing import Any

from ..config.files import read_mapping
from ..core.errors import ConfigError, did_you_mean
from . import Report, literal

ENTRY = "maelstrom_run.interop.command:main"
_TOP = ("name", "python_env", "conda_env", "docker_env", "entry_points")
_TYPES = {
    "string": "string",
    "str": "string",
    "text": "string",
    "float": "float",
    "double": "float",
    "number": "float",
    "int": "int",
    "integer": "int",
    "path": "path",
    "uri": "uri",
    "bool": "bool",
    "boolean": "bool",
}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
#: Scripts ``mlflow run -e FILE`` runs without an entry point of that name.
_SCRIPTS = {".py": "python", ".sh": "bash"}


def find(path: Path) -> Path:
    """The MLproject file: ``path`` itself, or the ``MLproject`` in directory ``path`` (any case)."""
    path = Path(path)
    if path.is_dir():
        found = [p for p in path.iterdir() if p.name.lower() == "mlproject" and p.is_file()]
        if not found:
            raise ConfigError(f"{path}: no MLproject file in this directory")
        return found[0]
    if not path.is_file():
        raise ConfigError(f"{path}: no such MLproject file")
    return path


def load(path: Path) -> dict[str, Any]:
    return read_mapping(find(path), "a mapping (name, entry_points, ...)")


def normalise_type(name: Any) -> str | None:
    return _TYPES.get(str(name).strip().lower()) if isinstance(name, str) else None


def typed(value: Any, kind: str) -> Any:
    """``value`` as a value of MLproject type ``kind``; ValueError when it is not one."""
    if value is None:
        return None
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value if isinstance(value, int) else int(str(value).strip())
    if kind == "float":
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(value)
    if isinstance(value, dict | list):
        raise ValueError(value)
    return value if isinstance(value, str) else str(value)


def to_app(
    data: dict[str, Any], entry_point: str, name: str, source: str
) -> tuple[dict[str, Any], dict[str, Any], Report]:
    """``(app, environment, report)``: the ``app`` section of an entry point and the project's
    environment (``python_env``/``conda_env``/``docker_env``, as written)."""
    report = Report()
    for key in data:
        if key not in _TOP:
            report.unknown_key(str(key), list(_TOP))
    if data.get("name") is not None:
        report.mapped.append("name")
    environment = {k: data[k] for k in ("python_env", "conda_env", "docker_env") if data.get(k) is not None}
    if len(environment) > 1:
        raise ConfigError(f"{source}: {' and '.join(environment)}: an MLproject has at most one environment")
    report.mapped += list(environment)
    points = data.get("entry_points") or {}
    if not isinstance(points, dict):
        raise ConfigError(f"{source}: entry_points: expected a mapping of entry points, got {points!r}")
    if entry_point in points:
        point = points[entry_point]
        if not isinstance(point, dict):
            raise ConfigError(
                f"{source}: entry_points.{entry_point}: expected a mapping (command, parameters)"
            )
        prefix = where = f"entry_points.{entry_point}"
        for key in point:
            if key not in ("command", "parameters"):
                report.unknown_key(f"{prefix}.{key}", ["command", "parameters"])
        command = point.get("command")
        if not isinstance(command, str) or not command.strip():
            raise ConfigError(f"{source}: {prefix}.command: missing; the shell command the entry point runs")
        report.mapped.append(f"{prefix}.command")
        params, types = _parameters(point.get("parameters") or {}, prefix, source, report)
    elif Path(entry_point).suffix in _SCRIPTS:
        command = f"{_SCRIPTS[Path(entry_point).suffix]} {shlex.quote(entry_point)}"
        params, types, where = {}, {}, entry_point
    else:
        known = ", ".join(points) or "none"
        raise ConfigError(
            f"{source}: entry point {entry_point!r} not found (entry points: {known}); choose one with "
            "--entry-point NAME, or name a .py or .sh script"
        )
    others = [p for p in points if p != entry_point]
    if others:
        report.notes.append(
            f"entry_points: imported {entry_point!r}; also there: {', '.join(others)} (import each with "
            "--entry-point NAME --name OTHER)"
        )
    placeholders = _placeholders(command, params, f"{source}: {where}.command")
    unused = [p for p in params if p not in placeholders]
    if unused:
        report.notes.append(
            f"{', '.join(unused)}: parameter(s) not in the command; they are recorded with the run only"
        )
    app = {
        "name": name,
        "description": f"MLproject {data.get('name') or name}, entry point {entry_point}",
        "entry": ENTRY,
        "framework": "any",
        "command": literal(command.strip()),
        "params": params,
        "param_types": types,
    }
    return app, environment, report


def _placeholders(command: str, params: dict[str, Any], where: str) -> set[str]:
    """The parameter names ``command`` uses; one that is no parameter is refused, as ``mlflow run``
    fails on it (its ``str.format`` has no value for it)."""
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(command) if field is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}; write a literal brace as {{{{ or }}}}") from None
    names = set()
    for field in fields:
        name = re.split(r"[.\[]", field, maxsplit=1)[0]
        if not name or name.isdigit():
            raise ConfigError(
                f"{where}: placeholder {{{field}}} has no name; name a parameter ({{NAME}}), or write a "
                "literal brace as {{ or }}"
            )
        if name not in params:
            hint = (
                did_you_mean(name, params, noun="parameters")
                if params
                else "; the entry point has no parameters"
            )
            raise ConfigError(
                f"{where}: placeholder {{{name}}} is not a parameter{hint} (mlflow run fails on it too); "
                "declare it under parameters, or write a literal brace as {{ or }}"
            )
        names.add(name)
    return names


def _parameters(
    section: Any, prefix: str, source: str, report: Report
) -> tuple[dict[str, Any], dict[str, str]]:
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: {prefix}.parameters: expected a mapping of parameters, got {section!r}")
    params: dict[str, Any] = {}
    types: dict[str, str] = {}
    for raw_name, spec in section.items():
        name = str(raw_name)
        path = f"{prefix}.parameters.{name}"
        if not re.fullmatch(r"[A-Za-z_][\w-]*", name):
            raise ConfigError(f"{source}: {path}: a parameter name of letters, digits, _ and - only")
        if isinstance(spec, str) or spec is None:
            declared, default = spec or "string", None
        elif isinstance(spec, dict):
            for key in spec:
                if key not in ("type", "default"):
                    report.unknown_key(f"{path}.{key}", ["type", "default"])
            declared, default = spec.get("type", "string"), spec.get("default")
        else:
            raise ConfigError(
                f"{source}: {path}: expected a type or a mapping {{type, default}}, got {spec!r}"
            )
        kind = normalise_type(declared)
        if kind is None:
            report.notes.append(f"{path}.type: {declared!r} is not an MLproject type; taken as string")
            kind = "string"
        report.mapped.append(path)
        if default is None:  # no default: mandatory, as mlflow run requires a value
            value: Any = "???"
        elif isinstance(default, str) and default.strip() == "None":
            value = None
        else:
            try:
                value = typed(default, kind)
            except ValueError:
                report.notes.append(
                    f"{path}.default: {default!r} is not of type {kind}; kept as a string parameter"
                )
                kind, value = "string", str(default)
        if isinstance(value, str) and value != "???":
            value = literal(value)
        params[name] = value
        types[name] = kind
    return params, types


# -- values into the command (what maelstrom_run.interop.command runs) ----------------------------


def is_uri(text: str) -> bool:
    """A URI has a scheme (``s3://``, ``https://``, ``file:///``), as ``mlflow run`` checks it."""
    return bool(urllib.parse.urlparse(text).scheme)


def command_value(name: str, value: Any, kind: str, cwd: Path) -> str:
    """The text of a parameter in the command (before quoting); ValueError names what is wrong."""
    key = f"app.params.{name}"
    if value == "???":
        raise ValueError(f"{key}: missing mandatory value; give it with {key}=VALUE")
    if value is None:
        return "None"
    if kind in ("int", "float", "bool"):
        try:
            value = typed(value, kind)
        except (ValueError, TypeError):
            raise ValueError(
                f"{key}: {value!r} is not of type {kind} (the parameter's MLproject type)"
            ) from None
    if kind == "uri" and not is_uri(str(value)):
        raise ValueError(f"{key}: {value!r} is not a URI (type uri needs a scheme, e.g. s3://bucket/key)")
    if kind == "path" and not is_uri(str(value)):
        local = os.path.abspath(cwd / str(value))  # as mlflow run makes it absolute
        if not os.path.exists(local):
            raise ValueError(f"{key}: {value!r}: no such file or directory (in {cwd})")
        return local
    if kind == "path" and str(value).startswith("file://"):
        return urllib.parse.urlparse(str(value)).path
    return str(value)


def format_command(command: str, params: dict[str, Any], types: dict[str, str], cwd: Path) -> str:
    """``command`` with its ``{name}`` placeholders filled, each value shell-quoted (as ``mlflow run``)."""
    values = {
        name: shlex.quote(command_value(name, value, types.get(name, "string"), cwd))
        for name, value in params.items()
    }
    try:
        return command.format(**values)
    except KeyError as exc:
        raise ValueError(
            f"app.command: placeholder {{{exc.args[0]}}} has no value; add it with +app.params.{exc.args[0]}=VALUE"
        ) from None
    except (IndexError, ValueError) as exc:
        raise ValueError(f"app.command: {exc}; write a literal brace as {{{{ or }}}}") from None


# -- export -----------------------------------------------------------------------------------------


def parse_overrides(overrides: list[str]) -> list[Any]:
    """Hydra's reading of ``overrides``; a sweep (``a=1,2``) is refused: an MLproject runs one job."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            override = parser.parse_override(text)
        except Exception as exc:  # noqa: BLE001 - Hydra's parse errors become one line
            raise ConfigError(f"override {text!r}: {str(exc).splitlines()[0]}") from None
        if override.is_sweep_override():
            raise ConfigError(f"{text}: a sweep; export one run (give a single value)")
        parsed.append(override)
    return parsed


def to_mlproject(
    name: str, overrides: list[str], config: dict[str, Any], config_dir: str | None
) -> tuple[dict[str, Any], list[str]]:
    """``(MLproject, parameter names)``: an MLproject whose ``main`` runs ``maelstrom-run`` with
    ``overrides``; each value override is a parameter (its type from the value, the value as default).

    Group choices (``app=ap1``, ``backend=slurm``), deletions and ``hydra/...`` stay fixed in the
    command.
    """
    words = ["maelstrom-run"]
    if config_dir:
        words += ["--config-dir", _template(shlex.quote(config_dir))]
    parameters: dict[str, Any] = {}
    for text, override in zip(overrides, parse_overrides(overrides), strict=True):
        key = override.key_or_group
        value = override.value()
        current = _lookup(config, key)
        fixed = (
            override.is_delete()
            or override.is_hydra_override()
            or "/" in key
            or override.package is not None
            or (isinstance(current, dict) and isinstance(value, str))  # a config group choice
        )
        if fixed:
            words.append(_template(shlex.quote(text)))
            continue
        param = _parameter_name(key, parameters)
        raw = text.split("=", 1)[1]
        if isinstance(value, bool) or not isinstance(value, int | float):
            parameters[param] = {"type": "string", "default": raw}
        else:
            parameters[param] = {"type": "int" if isinstance(value, int) else "float", "default": value}
        prefix = text[: len(text) - len(text.lstrip("+~"))]
        words.append(f"{_template(shlex.quote(prefix + key + '='))}{{{param}}}")
    project = {
        "name": name,
        "python_env": "python_env.yaml",
        "entry_points": {"main": {"parameters": parameters, "command": " ".join(words)}},
    }
    if not parameters:
        del project["entry_points"]["main"]["parameters"]
    return project, list(parameters)


def _template(text: str) -> str:
    """Fixed text inside a ``str.format`` command: braces doubled."""
    return text.replace("{", "{{").replace("}", "}}")


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _parameter_name(key: str, taken: dict[str, Any]) -> str:
    """``model.learning_rate`` -> ``model_learning_rate`` (a ``.`` would be attribute access in the
    command's ``str.format``); a clash gets ``_2``, ``_3``."""
    base = re.sub(r"\W", "_", key)
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


def python_env(config: dict[str, Any]) -> dict[str, Any]:
    """``python_env.yaml``: this Python version and maelstrom-run with the extras the app needs."""
    import platform
    from importlib import metadata

    extras = ["tracking"]
    if config.get("dataset"):
        extras.append("data")
    framework = (config.get("app") or {}).get("framework")
    if framework in ("tensorflow", "pytorch"):
        extras.append("tensorflow" if framework == "tensorflow" else "torch")
    try:
        pin = f"=={metadata.version('maelstrom-run')}"
    except metadata.PackageNotFoundError:
        pin = ""
    return {
        "python": platform.python_version(),
        "build_dependencies": ["pip"],
        "dependencies": [f"maelstrom-run[{','.join(extras)}]{pin}"],
    }
