"""Interop with MLflow Projects and Mantik: their files as configs of maelstrom-run and back.
Imports core and config.

- :mod:`.mantik`: a Mantik compute-backend config (YAML or JSON) as a ``backend`` config.
- :mod:`.mlproject`: an MLproject entry point as an ``app`` config, and an app as an MLproject.
- :mod:`.command`: the app entry point that runs such a command (``maelstrom_run.interop.command:main``).
- :mod:`maelstrom_run.commands.interop`: the commands ``maelstrom import mantik``, ``maelstrom export mlproject``.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Report:
    """What an import did: the source keys it mapped, those it did not know, and other remarks."""

    #: Key paths of the source that were mapped (``Resources.Queue``).
    mapped: list[str] = field(default_factory=list)
    #: Unknown key paths, each with its hint (``Resources.Nodez: unknown key; did you mean 'Nodes'?``).
    unknown: list[str] = field(default_factory=list)
    #: Values that were changed, guessed or could not be carried over, one line each.
    notes: list[str] = field(default_factory=list)

    def unknown_key(self, path: str, options: list[str]) -> None:
        from ..core.errors import did_you_mean

        key = path.rpartition(".")[2]
        self.unknown.append(f"{path}: unknown key, not imported{did_you_mean(key, options)}")

    def merge(self, other: Report) -> None:
        self.mapped += other.mapped
        self.unknown += other.unknown
        self.notes += other.notes


def literal(text: str) -> str:
    """A string as config text: ``${...}`` (a shell variable) is kept, not read as an interpolation."""
    return text.replace("${", "\\${")


def yaml_error(path: object, exc: Exception) -> str:
    """One line for a YAML file that does not parse: the file, line and column, and what is wrong
    (a tab in the indentation gets its own hint: YAML allows only spaces there)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or (str(exc).splitlines() or [type(exc).__name__])[0]
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    hint = ""
    if mark is not None and mark.buffer:
        line = mark.buffer.splitlines()[mark.line] if mark.line < len(mark.buffer.splitlines()) else ""
        if "\t" in line[: len(line) - len(line.lstrip())] or "\t" in str(problem):
            hint = "; a tab in the indentation: YAML indents with spaces only"
    return f"{where}: not valid YAML: {problem}{hint}"
