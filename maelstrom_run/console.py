"""The one way maelstrom-run writes to the terminal (rich)."""

from __future__ import annotations

import os
from typing import Any


def console(stderr: bool = False) -> Any:
    """A rich console; when piped (not a terminal) lines are kept whole instead of wrapped at 80 columns."""
    from rich.console import Console

    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = 160
    return out
