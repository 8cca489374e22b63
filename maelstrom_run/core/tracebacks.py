"""Exceptions that keep their traceback on the way from a job back to the submitting process.

Pickle drops an exception's traceback. A job's failure marked with :func:`keep_traceback` is
rebuilt with frames of the same files, functions, lines and columns, so that Python's and Hydra's
traceback printers show the app's own frames (and mark the same part of each line) where the
exception is raised again, as if the job had run in that process.
"""

from __future__ import annotations

import itertools
import linecache
import sys
import types
from typing import Any

#: What a frame of a traceback keeps: file, function, module, line, and the positions of the
#: instruction that raised (line, end line, column, end column, as ``co_positions`` gives them).
Frame = tuple[str, str, str, int, int | None, int | None, int | None, int | None]


def _frames(tb: types.TracebackType | None) -> list[Frame]:
    frames = []
    while tb is not None:
        code = tb.tb_frame.f_code
        positions = next(itertools.islice(code.co_positions(), tb.tb_lasti // 2, None), (None,) * 4)
        name = tb.tb_frame.f_globals.get("__name__", "")
        frames.append((code.co_filename, code.co_name, name, tb.tb_lineno, *positions))
        tb = tb.tb_next
    return frames


class _Marker(Exception):
    pass


def _raise() -> None:
    raise _Marker


def _stub(frame: Frame) -> types.TracebackType:
    """A real frame of ``frame``'s file, function and line, stopped at a call that spans the same
    columns as the instruction that raised there."""
    filename, name, module, lineno, line, end_line, col, end_col = frame
    lineno = max(lineno or 1, 1)
    unknown = line != lineno or end_line is None or col is None or end_col is None
    if unknown or (end_line == line and end_col - col < 3):  # type: ignore[operator]
        # the whole line, which a traceback does not mark (narrower than ``r()``: not marked either)
        width = len(linecache.getline(filename, lineno).rstrip("\n").encode())
        line, end_line, col, end_col = lineno, lineno, 0, max(width, 3)
    if end_line == line:  # one line: ``r(   )`` as wide as the original
        call = "r(" + " " * (end_col - col - 3) + ")"
    else:
        call = "r(" + "\n" * (end_line - line) + " " * max(end_col - 1, 0) + ")"
    if col:  # at the same column, in brackets (which are not part of the call) rather than indented
        call = "(" + " " * (col - 1) + call + ")"
    code = compile("\n" * (lineno - 1) + call, filename, "exec").replace(co_name=name)
    try:
        exec(code, {"__name__": module, "__file__": filename, "r": _raise})  # noqa: S102
    except _Marker:
        tb = sys.exc_info()[2]
    assert tb is not None and tb.tb_next is not None
    return tb.tb_next


def _traceback(frames: list[Frame]) -> types.TracebackType | None:
    tb = None
    for frame in reversed(frames):
        stub = _stub(frame)
        tb = types.TracebackType(tb, stub.tb_frame, stub.tb_lasti, stub.tb_lineno)
    return tb


def _rebuild(func: Any, args: tuple[Any, ...], state: Any, extra: dict[str, Any]) -> Any:
    try:
        exc = func(*args)
    except Exception:
        if not isinstance(func, type):
            raise
        # an ``__init__`` that takes other arguments than it hands to Exception (which pickle cannot
        # call again): the same class and message, made without calling it
        exc = func.__new__(func, *args)
    if isinstance(state, dict):
        exc.__dict__.update(state)
    elif state is not None:
        exc.__setstate__(state)
    try:
        exc.__traceback__ = _traceback(extra["frames"])
    except Exception:  # noqa: BLE001 - a file that does not compile here: the error without its frames
        pass
    exc.__cause__, exc.__context__ = extra["cause"], extra["context"]
    exc.__suppress_context__ = extra["suppress_context"]
    return exc


def keep_traceback(exc: BaseException, _seen: set[int] | None = None) -> None:
    """Make ``exc``, and the exceptions chained to it, pickle with their tracebacks."""
    seen = set() if _seen is None else _seen
    if id(exc) in seen:
        return
    seen.add(id(exc))

    def reduce_ex(protocol: int) -> Any:
        func, args, *rest = type(exc).__reduce_ex__(exc, protocol)
        state = rest[0] if rest else None
        if isinstance(state, dict):
            state = {k: v for k, v in state.items() if k != "__reduce_ex__"}
        extra = {
            "frames": _frames(exc.__traceback__),
            "cause": exc.__cause__,
            "context": exc.__context__,
            "suppress_context": exc.__suppress_context__,
        }
        return _rebuild, (func, args, state, extra)

    # an attribute of the instance: pickle looks it up there before the class's
    exc.__reduce_ex__ = reduce_ex  # type: ignore[method-assign]
    for chained in (exc.__cause__, exc.__context__):
        if chained is not None:
            keep_traceback(chained, seen)
