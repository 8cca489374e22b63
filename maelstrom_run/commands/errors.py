"""The error boundary of both commands: user errors (bad overrides, typos, unknown options, files,
ids) become one clear line and exit code 2; anything else is a bug: one line saying where its
traceback was written (under ``$MAELSTROM_HOME/logs``), exit code 1."""

from __future__ import annotations

import errno
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config.validate import unknown_group_message, unknown_key_message
from ..core.errors import EXIT_FAILED, EXIT_USER_ERROR, ConfigError, JobError, UserError, closest


def guarded(program: str, func: Callable[[], int | None], argv: Sequence[str] = ()) -> int:
    """Run a command's body: its exit code, or the one line and exit code of what it raised."""
    try:
        return func() or 0
    except KeyboardInterrupt:
        print(f"{program}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - the boundary: every exception ends here as one line
        return report(program, exc, argv)


def report(program: str, exc: BaseException, argv: Sequence[str] = ()) -> int:
    """Print the one line of ``exc`` and return its exit code (a bug's traceback goes to a log file)."""
    known = explain(exc, argv)
    if known is not None:
        code, message = known
        print(f"{program}: error: {message}", file=sys.stderr)
        return code
    where = _write_traceback(program, exc, argv)
    print(
        f"{program}: internal error (a bug): {type(exc).__name__}: {_first(str(exc))}; "
        f"traceback written to {where} (please report it with that file)",
        file=sys.stderr,
    )
    return EXIT_FAILED


def _write_traceback(program: str, exc: BaseException, argv: Sequence[str]) -> Path | str:
    from ..core.paths import home

    name = f"{program}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    text = f"{program} {' '.join(argv)}\n\n" + "".join(traceback.format_exception(exc))
    for directory in (home() / "logs", Path(tempfile.gettempdir())):
        try:
            directory.mkdir(parents=True, exist_ok=True)
            (directory / name).write_text(text)
            return directory / name
        except OSError:  # MAELSTROM_HOME itself may be what is broken
            continue
    return "nowhere (no writable directory); run again with HYDRA_FULL_ERROR=1 to see it"


def explain(exc: BaseException, argv: Sequence[str] = ()) -> tuple[int, str] | None:
    """``(exit code, one line)`` for a known user error, None for a bug."""
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
        SearchPathException,
    )
    from omegaconf.errors import OmegaConfBaseException

    if (yaml_error := _yaml_error(exc)) is not None:
        return EXIT_USER_ERROR, yaml_error
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
    if isinstance(exc, SearchPathException):
        return EXIT_USER_ERROR, f"{_first(str(exc))}; check --config-dir and MAELSTROM_CONFIG_PATH"
    if isinstance(exc, OmegaConfBaseException):
        key = getattr(exc, "full_key", None)
        return EXIT_USER_ERROR, f"{key}: {_first(str(exc))}" if key else _first(str(exc))
    if isinstance(exc, ValueError | TypeError) and _raised_in(
        exc, ("hydra/_internal/grammar", "override_parser")
    ):
        # a sweep function (range, choice, interval ...) refused its arguments
        named = [a for a in argv if "=" in a and "(" in a]
        return EXIT_USER_ERROR, f"override {' '.join(named) or '(a sweep function)'}: {_first(str(exc))}"
    if isinstance(exc, OSError) and exc.filename and exc.errno in _PATH_ERRORS:
        return EXIT_USER_ERROR, _path_error(exc)
    return None


#: What is wrong with a path the user gave (or ``MAELSTROM_HOME``/``MAELSTROM_CACHE`` points into).
_PATH_ERRORS = {
    errno.ENOTDIR: "a part of this path is a file, not a directory",
    errno.EISDIR: "this is a directory; give a file",
    errno.EEXIST: "exists and is not a directory",
    errno.EACCES: "permission denied",
    errno.EPERM: "not permitted",
    errno.EROFS: "on a read-only file system",
    errno.ENOSPC: "no space left on the device",
    errno.ENOENT: "no such file or directory",
    errno.ENAMETOOLONG: "the name is too long",
}


def _path_error(exc: OSError) -> str:
    from ..core.paths import cache_dir, home

    path = Path(str(exc.filename))
    where = ""
    for variable, root in (("MAELSTROM_CACHE", cache_dir()), ("MAELSTROM_HOME", home())):
        if path == root or root in path.parents:
            where = f" (under {variable}={root}; point it at a directory you can write)"
            break
    return f"{path}: {_PATH_ERRORS[exc.errno]}{where}"


def _raised_in(exc: BaseException, parts: tuple[str, ...]) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if any(p in tb.tb_frame.f_code.co_filename.replace(os.sep, "/") for p in parts):
            return True
        tb = tb.tb_next
    return False


def _yaml_error(exc: BaseException) -> str | None:
    """``file:line:column: problem`` of a malformed YAML file anywhere in the exception's chain."""
    import yaml

    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, yaml.MarkedYAMLError):
            from ..config.files import yaml_message

            mark = node.problem_mark or node.context_mark
            return yaml_message(mark.name if mark is not None else "a config file", node)
        node = node.__cause__ or node.__context__
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
    if "Could not override ''" in text:
        return "an override has nothing before '='; write KEY=VALUE (or GROUP=OPTION)"
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


__all__ = ["EXIT_FAILED", "EXIT_USER_ERROR", "ConfigError", "explain", "guarded", "report"]
