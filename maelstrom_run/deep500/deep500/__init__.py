"""Stand-in ``deep500`` package: only ``deep500.utils.timer`` (and its torch/tf variants).

Imported as ``deep500`` while a real Deep500 is installed elsewhere on the path (say a
``pip install -e`` of the MAELSTROM fork), it loads that one in its place, so a script always gets
the real fork when it exists. ``DEEP500_TIMER_OBSERVER=module:function`` names a function called
first (maelstrom-run sets it to capture the timers of whichever package is used).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys


def _observe() -> None:
    target = os.environ.get("DEEP500_TIMER_OBSERVER", "")
    module, _, function = target.partition(":")
    if not module or not function:
        return
    try:
        getattr(importlib.import_module(module), function)()
    except Exception as exc:  # noqa: BLE001 - timing capture must never break the application
        print(f"deep500 (maelstrom-run fallback): observer {target} unusable: {exc}", file=sys.stderr)


def _hand_over() -> bool:
    """Load a real ``deep500`` found elsewhere on the path in place of this module; True if found."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    saved_path, me = list(sys.path), sys.modules.pop(__name__)
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != root]
    try:
        spec = importlib.util.find_spec(__name__)
        if spec is None or spec.loader is None:
            return False
        real = importlib.util.module_from_spec(spec)
        sys.modules[__name__] = real
        try:
            spec.loader.exec_module(real)
        except BaseException:
            del sys.modules[__name__]
            raise
        return True
    finally:
        sys.path[:] = saved_path
        sys.modules.setdefault(__name__, me)


if __name__ == "deep500":  # not when imported as part of maelstrom_run (the report's formatter)
    _observe()
    _hand_over()
