"""The error types every layer raises, with the exit code each one means, and the did-you-mean hint.

A :class:`UserError` is something the user can fix (a key, a file, an id, a credential, a server that
does not answer): the command layer prints its one line and exits 2. A :class:`JobError` is a job that
ran and failed: one line, exit 1. Anything else is a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2
EXIT_FAILED = 1


class UserError(Exception):
    """A mistake or a condition the user can act on; the message is one line saying what to do."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError, ValueError):
    """A user error in a configuration; the message is one line naming the key path."""


class DataError(UserError):
    """A dataset problem the user can act on (missing file, dead server, full disk, bad checksum)."""


class BackendError(UserError):
    """A compute target refused a request or cannot be reached (one line, with what to do)."""


class JobError(Exception):
    """A job ran and failed (the app raised, the tracking server did not answer): exit code 1."""

    exit_code = EXIT_FAILED


def closest(word: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option nearest to ``word``, None when none is near enough."""
    match = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=cutoff)
    return match[0] if match else None


def did_you_mean(word: str, options: Iterable[str], *, noun: str = "valid keys", cutoff: float = 0.6) -> str:
    """``"; did you mean 'x'?"`` when one option is close, else ``"; valid keys: a, b"``."""
    options = list(options)
    match = closest(word, options, cutoff)
    return f"; did you mean '{match}'?" if match else f"; {noun}: {', '.join(sorted(map(str, options)))}"
