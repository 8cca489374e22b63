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
