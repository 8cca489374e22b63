"""Transitional: the rich console now lives in :mod:`maelstrom_run.commands.console`.

Only ``data/cache.py`` still imports this (its ``fetch_many`` draws its own progress bar); once it
takes a ``progress`` callback like ``data/copy.py`` this module goes.
"""

from .commands.console import byte_progress, make_console

__all__ = ["byte_progress", "make_console"]
