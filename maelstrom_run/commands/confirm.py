"""Asking before a command deletes or cancels recorded things: it says exactly what will go, asks on a
terminal, and needs ``--yes`` otherwise (a script never deletes by accident)."""

from __future__ import annotations

import argparse
import sys

from ..core.errors import UserError


def add_yes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--yes", "-y", action="store_true", help="do it without asking")


def confirm(what: str, yes: bool, command: str) -> None:
    """Return when the user agrees to ``what`` (``remove 3 files``); else raise (nothing done)."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise UserError(f"this would {what}; nothing done: run `{command} --yes` to do it without asking")
    print(f"this will {what}.", file=sys.stderr)
    try:
        answer = input("go ahead? [y/N] ")
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise UserError("nothing done (not confirmed)")
