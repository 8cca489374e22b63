"""Firing times of a schedule: cron expressions in an IANA time zone, correct across DST changes.

A schedule's *slots* are the wall-clock times its cron expression names in its time zone
(``2026-03-29T02:30``); a slot is fired at most once. Across daylight-saving changes:

- a wall-clock time that does not exist (spring forward, 02:30 in Europe/Berlin on 2026-03-29)
  is due at the change itself (03:00 CEST);
- a wall-clock time that occurs twice (fall back, 02:30 on 2026-10-25) is due once, at its first
  occurrence (02:30 CEST).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..core.errors import ConfigError

UTC = dt.UTC
CATCHUP = ("none", "last", "all")


@dataclass(frozen=True)
class Slot:
    #: Wall-clock time in the schedule's zone, ``YYYY-MM-DDTHH:MM`` (the slot's identity).
    key: str
    #: When it is due (aware, UTC).
    due: dt.datetime


def zone(name: str, path: str = "schedule.timezone") -> Any:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

    try:
        if not name or name.startswith(("/", ".")) or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        from ..core.errors import did_you_mean

        hint = did_you_mean(name, available_timezones(), noun="valid time zones")
        if "did you mean" not in hint:
            hint = "; use an IANA name such as Europe/Berlin or UTC"
        raise ConfigError(f"{path}: unknown time zone {name!r}{hint}") from None


def check_cron(expr: Any, path: str = "schedule.cron") -> str:
    from croniter import croniter

    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{path}: expected a cron expression such as '0 3 * * 1', got {expr!r}")
    fields = expr.split()
    if len(fields) != 5 and not (len(fields) == 1 and fields[0].startswith("@")):
        raise ConfigError(
            f"{path}: {expr!r} is not a valid cron expression: expected 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '0 3 * * 1'"
        )
    try:
        croniter(expr)
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{path}: {expr!r} is not a valid cron expression: {exc}".splitlines()[0]) from None
    return " ".join(fields)


def parse_when(value: Any, tz: Any, path: str, whole_day: bool = False) -> dt.datetime | None:
    """An ISO date or date-time (in ``tz`` unless it carries an offset) as an aware UTC datetime.

    ``whole_day``: a bare day (``2026-12-31``) stands for its last moment, so that an end date
    includes that day; a start date is the day's first moment."""
    if value is None or value == "":
        return None
    day_only = isinstance(value, dt.date) and not isinstance(value, dt.datetime)
    if isinstance(value, dt.datetime):
        when = value
    elif isinstance(value, dt.date):
        when = dt.datetime.combine(value, dt.time())
    else:
        text = str(value).strip()
        day_only = len(text) == 10  # YYYY-MM-DD: no time of day given
        try:
            when = dt.datetime.fromisoformat(text.replace(" ", "T", 1))
        except ValueError:
            raise ConfigError(
                f"{path}: {value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM"
            ) from None
    if whole_day and day_only:  # the first moment of the next day, less one: the day's last
        next_day = _aware(dt.datetime.combine(when.date() + dt.timedelta(days=1), dt.time()), tz)
        return (next_day - dt.timedelta(microseconds=1)).astimezone(UTC)
    if when.tzinfo is None:
        when = _aware(when, tz)
    return when.astimezone(UTC)


def check(conf: dict[str, Any], key: str = "schedule") -> dict[str, Any]:
    """Validate a composed ``schedule`` section; returns its normalised form (cron, zone, start, end).
    Registered with the config validator in the schema."""
    from .benchmark import check as check_benchmark

    check_benchmark(conf.get("benchmark"))
    name = conf.get("name", "none")
    if name == "none":
        return dict(conf)
    cron = check_cron(conf.get("cron"))
    tz = zone(str(conf.get("timezone") or ""))
    start = parse_when(conf.get("start"), tz, "schedule.start")
    end = parse_when(conf.get("end"), tz, "schedule.end", whole_day=True)
    if start and end and end <= start:
        raise ConfigError(
            f"schedule.end: {conf.get('end')} is not after schedule.start {conf.get('start')}; "
            "set a later schedule.end or an earlier schedule.start"
        )
    if conf.get("catchup") not in CATCHUP:
        raise ConfigError(f"schedule.catchup: {conf.get('catchup')!r} is not one of {', '.join(CATCHUP)}")
    commit = conf.get("commit")
    if commit is not None and (not isinstance(commit, str) or not commit.strip()):
        raise ConfigError(f"schedule.commit: expected a commit (hash, tag or branch), got {commit!r}")
    return {**conf, "cron": cron, "start": start, "end": end}


def _aware(local: dt.datetime, tz: Any) -> dt.datetime:
    """The instant of a wall-clock time in ``tz``: first occurrence if repeated; the change if skipped."""
    first = local.replace(tzinfo=tz, fold=0)
    if first.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == local:
        return first.astimezone(UTC)
    # in a gap: the earliest instant whose wall-clock time is not before ``local``
    lo = local.replace(tzinfo=tz, fold=1).astimezone(UTC)
    hi = first.astimezone(UTC)
    lo, hi = min(lo, hi), max(lo, hi)
    while hi - lo > dt.timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        if mid.astimezone(tz).replace(tzinfo=None) >= local:
            hi = mid
        else:
            lo = mid
    return hi.replace(microsecond=0)


def slots(
    cron: str, tz_name: str, after: dt.datetime, until: dt.datetime | None = None, limit: int | None = None
) -> Iterator[Slot]:
    """Slots due strictly after ``after`` (and not after ``until``), in order."""
    from croniter import croniter

    tz = zone(tz_name)
    # step through wall-clock time (naive), a few hours before ``after`` so that times moved by a DST change are seen
    start = after.astimezone(tz).replace(tzinfo=None) - dt.timedelta(hours=3)
    it = croniter(cron, start)
    seen = 0
    while limit is None or seen < limit:
        local = it.get_next(dt.datetime)
        due = _aware(local, tz)
        if due <= after:
            continue
        if until is not None and due > until:
            return
        seen += 1
        yield Slot(local.strftime("%Y-%m-%dT%H:%M"), due)


def now_utc() -> dt.datetime:
    return dt.datetime.now(UTC).replace(microsecond=0)


def parse_now(text: str | None) -> dt.datetime:
    """``--now ISO`` (testing, backfills): aware UTC; a time without offset is UTC."""
    if not text:
        return now_utc()
    try:
        when = dt.datetime.fromisoformat(text.strip().replace(" ", "T", 1))
    except ValueError:
        raise ConfigError(f"--now {text!r}: not a date-time; use e.g. 2026-03-29T03:00+02:00") from None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
