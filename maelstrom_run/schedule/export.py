"""Schedules as entries of the system's scheduler: crontab, Slurm's scrontab, systemd timers.

Every entry runs ``maelstrom scheduler run --once --schedule ID`` at the schedule's cron times, so
the end date, catch-up policy, concurrency bound and once-per-slot guarantee still hold.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import ConfigError

_DAYS = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]


def _program() -> str:
    candidate = Path(sys.executable).parent / "maelstrom"
    return str(candidate) if candidate.exists() else "maelstrom"


def command(record: Any) -> str:
    """The shell command an entry runs (state directory and config path as now)."""
    env = [f"MAELSTROM_HOME={shlex.quote(str(paths.home()))}"]
    if os.environ.get("MAELSTROM_CONFIG_PATH"):
        env.append(f"MAELSTROM_CONFIG_PATH={shlex.quote(os.environ['MAELSTROM_CONFIG_PATH'])}")
    cd = f"cd {shlex.quote(record.code_dir)} && " if record.code_dir else ""
    log = shlex.quote(str(paths.home() / "scheduler.log"))
    run = f"{shlex.quote(_program())} scheduler run --once --schedule {record.schedule_id}"
    return f"{cd}{' '.join(env)} {run} >> {log} 2>&1"


def _header(record: Any) -> str:
    return f"# maelstrom schedule {record.schedule_id}: {record.app} ({record.preset}) in {record.timezone}"


def crontab(records: Sequence[Any]) -> str:
    out = [
        "# maelstrom schedules (crontab -e). CRON_TZ sets the zone of the lines below it (cronie, Vixie cron)."
    ]
    for r in records:
        out += [_header(r), f"CRON_TZ={r.timezone}", f"{r.cron} {command(r)}", ""]
    return "\n".join(out) + "\n"


def scrontab(records: Sequence[Any]) -> str:
    out = [
        "# maelstrom schedules for Slurm (scrontab -e): each entry is a short batch job that fires the schedule.",
        "# scrontab reads times in the Slurm controller's time zone; $MAELSTROM_HOME must be on a file system",
        "# where SQLite can lock (not NFS/GPFS without locking).",
    ]
    for r in records:
        out += [_header(r), f"#SCRON --job-name=maelstrom-{r.schedule_id}", "#SCRON --time=00:10:00"]
        out += [f"{r.cron} {command(r)}", ""]
    return "\n".join(out) + "\n"


def _field(values: list[Any], width: int = 2) -> str:
    if values == ["*"]:
        return "*"
    if not all(isinstance(v, int) for v in values):
        raise ValueError(values)
    return ",".join(f"{v:0{width}d}" for v in sorted(set(values)))


def on_calendar(cron: str, tz: str) -> list[str]:
    """systemd ``OnCalendar=`` values of a cron expression (two when both day fields are set: cron ORs them)."""
    from croniter import croniter

    minute, hour, dom, month, dow = croniter(cron).expanded
    try:
        time_part = f"{_field(hour)}:{_field(minute)}:00"
        date = f"*-{_field(month)}-"
        days = "" if dow == ["*"] else ",".join(dict.fromkeys(_DAYS[int(d)] for d in sorted(dow))) + " "
        dom_text = _field(dom)
    except (ValueError, TypeError, IndexError):
        raise ConfigError(
            f"schedule cron {cron!r} cannot be written as a systemd timer; export it with --format crontab"
        ) from None
    if dom != ["*"] and dow != ["*"]:
        return [f"*{date[1:]}{dom_text} {time_part} {tz}", f"{days}{date}* {time_part} {tz}"]
    return [f"{days}{date}{dom_text} {time_part} {tz}"]


def systemd(records: Sequence[Any]) -> str:
    out = ["# maelstrom schedules as systemd user units: save each file, then the commands at the end."]
    names = []
    for r in records:
        unit = f"maelstrom-{r.schedule_id}"
        names.append(f"{unit}.timer")
        service = [
            f"# ~/.config/systemd/user/{unit}.service",
            "[Unit]",
            f"Description=maelstrom schedule {r.schedule_id} ({r.app})",
            "",
            "[Service]",
            "Type=oneshot",
            f"ExecStart=/bin/sh -c {shlex.quote(command(r))}",
            "",
        ]
        timer = [
            f"# ~/.config/systemd/user/{unit}.timer",
            "[Unit]",
            f"Description=fires maelstrom schedule {r.schedule_id}: '{r.cron}' in {r.timezone}",
            "",
            "[Timer]",
            *(f"OnCalendar={c}" for c in on_calendar(r.cron, r.timezone)),
            "Persistent=true",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
        out += service + timer
    if names:
        out.append(f"# systemctl --user daemon-reload && systemctl --user enable --now {' '.join(names)}")
    return "\n".join(out) + "\n"


def export(records: Sequence[Any], fmt: str) -> str:
    return {"crontab": crontab, "scrontab": scrontab, "systemd": systemd}[fmt](records)
