"""Turn user errors (bad overrides, typos, unknown options) into one clear line and an exit code."""

from __future__ import annotations

import re

from ..config.validate import unknown_group_message, unknown_key_message
from ..core.errors import EXIT_FAILED, EXIT_USER_ERROR, ConfigError, JobError, UserError, closest


def explain(exc: BaseException) -> tuple[int, str] | None:
    """``(exit code, one line)`` for a known user error, None for a bug (show the traceback)."""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, UserError):
        return EXIT_USER_ERROR, str(exc)
    if isinstance(exc, JobError):
        return EXIT_FAILED, str(exc)
    if isinstance(exc, MissingConfigException):
        return EXIT_USER_ERROR, _missing_config(exc)
    if isinstance(exc, OverrideParseException):
        return EXIT_USER_ERROR, f"override {exc.override!r}: {_first(exc.message)}"
    if isinstance(exc, ConfigCompositionException):
        return EXIT_USER_ERROR, _composition(exc)
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        return EXIT_USER_ERROR, f"{key}: {_first(str(exc))}" if key else _first(str(exc))
    return None


def _first(text: str) -> str:
    return next((line.strip() for line in str(text).splitlines() if line.strip()), str(text))


def _missing_config(exc: BaseException) -> str:
    missing = getattr(exc, "missing_cfg_file", None) or ""
    options = list(getattr(exc, "options", None) or [])
    group, _, option = str(missing).rpartition("/")
    if group and options:
        close = closest(option, options, cutoff=0.5)
        hint = f"did you mean '{close}'? " if close else ""
        return f"{group}={option}: no such option; {hint}(available: {', '.join(sorted(options))})"
    return _first(str(exc))


def _composition(exc: BaseException) -> str:
    text = str(exc)
    if m := re.search(r"Could not override '([^']+)'\. No match in the defaults list", text):
        return unknown_group_message(m.group(1))
    if m := re.search(r"Could not override '([^']+)'\.\s*To append to your config use", text):
        return unknown_key_message(m.group(1))
    if m := re.search(r"Could not load '([^']+)'", text):
        cause = exc.__cause__
        if cause is not None and (inner := explain(cause)):
            return inner[1]
        return f"{m.group(1)}: {_first(text)}"
    cause = exc.__cause__
    if cause is not None and (inner := explain(cause)):
        return inner[1]
    return _first(text)


__all__ = ["EXIT_FAILED", "EXIT_USER_ERROR", "ConfigError", "explain"]
