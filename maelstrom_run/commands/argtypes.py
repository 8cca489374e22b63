"""Types of the numeric options of ``maelstrom``: each refuses a value out of its range (exit 2, one
line naming the option), as the config schemas do for config values."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(kind: type, minimum: float, strict: bool, what: str) -> Callable[[str], int | float]:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"{text} is out of range; it must be {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


#: A count of at least one (``--jobs``, ``-n``).
positive_int = _number(int, 1, False, "an integer >= 1")
#: A count where 0 means none or all, as the option says (``--limit``, ``--show``).
nonneg_int = _number(int, 0, False, "an integer >= 0")
#: Seconds that must pass (``--interval``).
positive_float = _number(float, 0, True, "a number > 0")
#: Seconds that may be zero (``--grace``).
nonneg_float = _number(float, 0, False, "a number >= 0")
