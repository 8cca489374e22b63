"""Units users write in configs: Slurm time limits and memory sizes."""

from __future__ import annotations

import re

from ..core.errors import ConfigError

_UNITS = re.compile(r"(\d+)([dhms])")
_CLOCK = re.compile(r"^(?:(\d+)-)?(\d+)(?::(\d{1,2}))?(?::(\d{1,2}))?$")


def time_limit_seconds(text: str | int, key: str = "backend.resources.time") -> int:
    """Seconds of a time limit: ``30m``, ``2h``, ``1d12h``, ``90s``, ``HH:MM:SS``, ``D-HH:MM:SS``, minutes."""
    value = str(text).strip().lower()
    if re.fullmatch(r"(?:\d+[dhms])+", value):
        total, seen = 0, set()
        for amount, unit in _UNITS.findall(value):
            if unit in seen:
                break
            seen.add(unit)
            total += int(amount) * {"d": 86400, "h": 3600, "m": 60, "s": 1}[unit]
        else:
            if total > 0:
                return total
    m = _CLOCK.match(value)
    if m and (m.group(3) is not None or m.group(1) is not None):
        days, first, second, third = (int(g) if g else 0 for g in m.groups())
        if m.group(4) is not None:  # [D-]HH:MM:SS
            hours, minutes, seconds = first, second, third
        elif m.group(1) is not None:  # D-HH[:MM]
            hours, minutes, seconds = first, second, 0
        else:  # MM:SS is Slurm's reading of two fields
            hours, minutes, seconds = 0, first, second
        if minutes < 60 and seconds < 60 and (days or hours or minutes or seconds):
            return days * 86400 + hours * 3600 + minutes * 60 + seconds
    if m and m.group(1) is None and m.group(3) is None and int(m.group(2)) > 0:
        return int(m.group(2)) * 60  # a bare number is minutes, as sbatch reads it
    raise ConfigError(
        f"{key}: {text!r} is not a time limit; write it like 30m, 2h, 1d12h, 01:30:00 or 2-00:00:00"
    )


_MEMORY = re.compile(r"^(\d+)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)


def memory_megabytes(text: str | int, key: str = "backend.resources.memory") -> int:
    """Megabytes of a memory size as sbatch reads it: ``4G``, ``500M``, ``2T``, ``4GB``, a bare number of MB."""
    m = _MEMORY.match(str(text).strip())
    if m and int(m.group(1)) > 0:
        factor = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2}[m.group(2).upper()]
        return max(1, int(int(m.group(1)) * factor))
    raise ConfigError(f"{key}: {text!r} is not a memory size; write it like 500M, 4G or 2T (per node)")


def slurm_time(seconds: int) -> str:
    """``D-HH:MM:SS`` (or ``HH:MM:SS`` under a day), the form every Slurm version accepts."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}-{clock}" if days else clock
