"""Reading a YAML or JSON file a user wrote (an MLproject, a Mantik backend config, a label taxonomy):
whatever is wrong with it is one line naming the file (and the line and column of a syntax error)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError


def read_mapping(path: Path, expected: str = "a mapping of keys", *, what: str = "") -> dict[str, Any]:
    """The mapping in a YAML (or, for ``.json``, JSON) file; ``expected`` says what a valid one holds."""
    import yaml

    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ConfigError(f"{label}: not a text file (binary data); expected YAML") from None
    except OSError as exc:
        raise ConfigError(f"{label}: cannot read it ({exc.strerror})") from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{label}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(yaml_message(label, exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected {expected}, got {type(data).__name__} {str(data)[:60]!r}")
    return data


def yaml_message(label: object, exc: Exception) -> str:
    """One line for YAML that does not parse: ``label``, the line and column, what is wrong (a tab
    in the indentation gets its own hint: YAML indents with spaces only)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "context", None)
    problem = problem or (str(exc).splitlines() or ["malformed YAML"])[0]
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    hint = ""
    lines = (getattr(mark, "buffer", None) or "").splitlines()
    if mark is not None and mark.line < len(lines):
        line = lines[mark.line]
        if "\t" in line[: len(line) - len(line.lstrip())] or "\t" in str(problem):
            hint = "; a tab in the indentation: YAML indents with spaces only"
    return f"{label}: not valid YAML{where}: {problem}{hint}"
