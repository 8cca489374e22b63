"""Register schedules and fire them: each firing is an ordinary run, tagged with its schedule.

``tick(now)`` is the whole scheduler: for every active schedule it finds the slots due since it
last looked, applies the catch-up policy, claims each slot it fires in the store (one transaction)
and only then builds and submits the run. ``now`` is passed in, so tests and backfills choose it.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from ..core.errors import ConfigError
from . import timing
from .store import CLAIMED, FAILED, SKIPPED, SUBMITTED, ScheduleRecord, ScheduleStore

if TYPE_CHECKING:
    from ..core.spec import RunSpec

#: The MLflow tag (and config ``tags`` entry) linking a run to its schedule.
TAG = "maelstrom.schedule_id"
#: Missed slots fired at most in one catch-up (``catchup: all``); older ones are skipped.
MAX_CATCHUP = 1000


def _ts(when: dt.datetime) -> float:
    return when.timestamp()


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, timing.UTC)


def _resolve_commit(pin: str, spec: Any) -> str:
    root = (spec.git or {}).get("root")
    if not root:
        raise ConfigError(
            f"schedule.commit: {pin!r} is pinned but {spec.code_dir} is not a git repository; "
            "run maelstrom-run in the repository of your code"
        )
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{pin}^{{commit}}"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        raise ConfigError(f"schedule.commit: {pin!r} is not a commit of {root}; see `git log`") from None
    return out.stdout.strip()


def upcoming(record: ScheduleRecord, count: int = 5, after: dt.datetime | None = None) -> list[timing.Slot]:
    start = max(_utc(record.checked_until), after or timing.now_utc())
    end = _utc(record.end) if record.end is not None else None
    return list(timing.slots(record.cron, record.timezone, start, until=end, limit=count))


@dataclass
class Registration:
    """A schedule made from a config: its record, the spec each firing submits, and whether it was
    recorded (not with ``dry_run=true``)."""

    record: ScheduleRecord
    spec: RunSpec
    registered: bool


def register(cfg: Any, overrides: list[str], store: ScheduleStore | None = None) -> Registration:
    """Record a schedule from a composed config (``maelstrom-run ... schedule=weekly``).

    With ``dry_run=true`` record nothing (``registered`` is false): the caller shows what a firing
    would submit."""
    from ..core.spec import config_hash, new_id
    from ..launch.spec import build

    spec = build(cfg, overrides)
    conf = timing.check(spec.config["schedule"])
    now = timing.now_utc()
    if conf["end"] and conf["end"] <= now:
        raise ConfigError(
            f"schedule.end: {spec.config['schedule'].get('end')} is already past, so the schedule would "
            "never fire; set a later schedule.end (or leave it out)"
        )
    start = conf["start"] or now
    schedule_id = new_id(f"sched-{spec.app}")
    pin = _resolve_commit(conf["commit"], spec) if conf.get("commit") else None
    tags = dict(spec.config.get("tags") or {})
    tags[TAG] = schedule_id
    spec.config["tags"] = tags
    spec = spec.derive(config_hash=config_hash(spec.config))
    record = ScheduleRecord(
        schedule_id=schedule_id,
        app=spec.app,
        preset=str(conf["name"]),
        cron=conf["cron"],
        timezone=str(conf["timezone"]),
        start=_ts(start),
        end=_ts(conf["end"]) if conf["end"] else None,
        catchup=str(conf["catchup"]),
        max_concurrent=int(conf["max_concurrent"]),
        pinned_commit=pin,
        state="active",
        # a slot exactly at an explicit start is due; by default only slots after now are
        checked_until=_ts(start) - (1 if conf["start"] else 0),
        skipped=0,
        code_dir=spec.code_dir,
        overrides=json.dumps(list(overrides)),
        spec=spec.to_yaml(),
        created=time.time(),
    )
    if spec.config.get("dry_run"):
        return Registration(record, spec, registered=False)
    (store or ScheduleStore()).add(record)
    return Registration(record, spec, registered=True)


def describe(record: ScheduleRecord) -> str:
    parts = [f"{record.app}: '{record.cron}' ({record.preset}) in {record.timezone}"]
    if record.end is not None:
        parts.append(f"until {format_due(_utc(record.end), record.timezone)}")
    parts.append(f"catch-up {record.catchup}, at most {record.max_concurrent} running")
    parts.append(f"commit {record.pinned_commit[:12]}" if record.pinned_commit else "current code")
    return "; ".join(parts)


def format_due(when: dt.datetime, tz_name: str) -> str:
    return when.astimezone(timing.zone(tz_name)).strftime("%Y-%m-%d %H:%M %Z")


# -- firing -------------------------------------------------------------------------------------
def make_spec(record: ScheduleRecord) -> Any:
    """The RunSpec of one firing: the template's config on the current code (or the pinned commit)."""
    from ..core.spec import RunSpec, package_versions
    from ..launch.gitinfo import capture
    from ..launch.rerun import respec

    template = RunSpec.from_dict(yaml.safe_load(record.spec))
    if record.pinned_commit:
        git = {**(template.git or {}), "commit": record.pinned_commit, "diff": "", "dirty": False}
        spec = respec(template.derive(git=git), current_code=False)
        spec = spec.derive(git={**git, "pinned": True})
    else:
        code = Path(template.code_dir or ".")
        if not code.is_dir():
            raise ConfigError(f"the code directory {code} of schedule {record.schedule_id} is gone")
        spec = respec(template, current_code=True)
        spec = spec.derive(git=capture(code))
    from ..launch.envdrift import reference

    # compared with the versions of the registration (or of the experiment it was registered from)
    env = template.env_reference or reference(f"schedule {record.schedule_id}", template.packages)
    return spec.derive(rerun_of=None, packages=package_versions(), env_reference=env)


@dataclass
class TickReport:
    fired: list[tuple[str, str, str]] = field(default_factory=list)  # (schedule, slot, run id)
    skipped: list[tuple[str, str, str]] = field(default_factory=list)  # (schedule, slot or count, why)
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # (schedule, slot, message)
    ended: list[str] = field(default_factory=list)


def active_runs(store: ScheduleStore, record: ScheduleRecord) -> int:
    """Runs of this schedule still queued or running (states refreshed from their backends)."""
    from ..launch.monitor import TERMINAL, refresh

    ids = [f.run_id for f in store.firings(record.schedule_id, limit=200, states=[SUBMITTED]) if f.run_id]
    records = []
    for run_id in ids:
        try:
            run = store.registry.get(run_id)
        except ConfigError:
            continue
        if run.state not in TERMINAL:
            records.append(run)
    return sum(r.state not in TERMINAL for r in refresh(store.registry, records))


def tick(
    now: dt.datetime,
    *,
    grace_s: float = 300,
    only: str | None = None,
    store: ScheduleStore | None = None,
    submit: Any = None,
) -> TickReport:
    """Fire every slot due at ``now`` (aware) according to each schedule's catch-up policy."""
    store = store or ScheduleStore()
    if submit is None:
        from ..launch.submit import submit
    report = TickReport()
    records = [store.get(only)] if only else store.list()
    for record in records:
        if record.state != "active":
            continue
        end = _utc(record.end) if record.end is not None else None
        limit = now if end is None else min(now, end)
        after = _utc(max(record.checked_until, record.start - 1))
        due = list(timing.slots(record.cron, record.timezone, after, until=limit))
        if record.catchup == "all":
            chosen = due[-MAX_CATCHUP:]
        elif record.catchup == "last":
            chosen = due[-1:]
        else:  # none: only a slot that is due now, not one missed while the scheduler was not running
            chosen = [s for s in due[-1:] if (now - s.due).total_seconds() <= grace_s]
        missed = len(due) - len(chosen)
        if missed:
            report.skipped.append(
                (record.schedule_id, f"{missed} missed slot(s)", f"catch-up {record.catchup}")
            )
        for slot in chosen:
            _fire(store, record, slot, report, submit)
        finished = end is not None and now >= end
        store.advance(record.schedule_id, _ts(limit), skipped=missed, state="ended" if finished else None)
        if finished:
            report.ended.append(record.schedule_id)
    return report


def _fire(
    store: ScheduleStore, record: ScheduleRecord, slot: timing.Slot, report: TickReport, submit: Any
) -> None:
    running = active_runs(store, record)
    if running >= record.max_concurrent:
        why = f"{running} run(s) of the schedule still queued or running (max_concurrent {record.max_concurrent})"
        if store.claim(record.schedule_id, slot.key, _ts(slot.due), state=SKIPPED, message=why):
            report.skipped.append((record.schedule_id, slot.key, why))
        return
    if not store.claim(record.schedule_id, slot.key, _ts(slot.due)):
        return  # fired before (another scheduler, or before a restart)
    try:
        spec = make_spec(record)
    except Exception as exc:  # noqa: BLE001 - one schedule's broken code must not stop the others
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        store.update_firing(record.schedule_id, slot.key, state=FAILED, message=message)
        report.failed.append((record.schedule_id, slot.key, message))
        return
    store.update_firing(record.schedule_id, slot.key, run_id=spec.run_id)
    try:
        submit([spec], wait=False, registry=store.registry)
    except Exception as exc:  # noqa: BLE001 - recorded; the registry row says failed too
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        store.update_firing(record.schedule_id, slot.key, state=FAILED, message=message)
        report.failed.append((record.schedule_id, slot.key, message))
        return
    store.update_firing(record.schedule_id, slot.key, state=SUBMITTED)
    report.fired.append((record.schedule_id, slot.key, spec.run_id))


__all__ = ["CLAIMED", "TAG", "Registration", "TickReport", "make_spec", "register", "tick", "upcoming"]
