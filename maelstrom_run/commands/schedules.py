"""``maelstrom schedules ...`` and ``maelstrom scheduler run``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any

from .argtypes import nonneg_float, nonneg_int, positive_float, positive_int
from .confirm import add_yes, confirm

if TYPE_CHECKING:
    from ..schedule.scheduler import Registration

_COLOURS = {"active": "green", "paused": "yellow", "ended": "dim"}


def _console(stderr: bool = False) -> Any:
    from .console import make_console

    return make_console(stderr)


def _store() -> Any:
    from ..schedule.store import ScheduleStore

    return ScheduleStore()


def cmd_list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.table import Table

    from ..schedule.scheduler import format_due, upcoming

    store = _store()
    table = Table(
        title=f"schedules in {store.path}", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False
    )
    for column in ("schedule id", "app", "cron", "time zone", "state", "next firing", "fired", "overrides"):
        table.add_column(column, overflow="fold")
    records = store.list()
    for r in records:
        nxt = upcoming(r, 1) if r.state == "active" else []
        fired = len(store.firings(r.schedule_id, states=["submitted"]))
        table.add_row(
            r.schedule_id,
            r.app,
            r.cron,
            r.timezone,
            f"[{_COLOURS.get(r.state, 'white')}]{r.state}[/]",
            format_due(nxt[0].due, r.timezone) if nxt else "-",
            str(fired),
            " ".join(r.override_list) or "-",
        )
    console = _console()
    console.print(table)
    if records:
        console.print(f"{len(records)} schedule(s); details: maelstrom schedules show ID", highlight=False)
    else:
        console.print("no schedules yet: register one with `maelstrom-run app=ap1 schedule=weekly`")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ..schedule.scheduler import _utc, describe, format_due, upcoming

    store = _store()
    r = store.get(args.id)
    console = _console()
    rows = [
        ("schedule id", r.schedule_id),
        ("state", r.state),
        ("schedule", describe(r)),
        ("start", format_due(_utc(r.start), r.timezone)),
        ("overrides", " ".join(r.override_list) or "-"),
        ("code", r.code_dir or "-"),
        ("checked until", format_due(_utc(r.checked_until), r.timezone)),
        ("missed, skipped", str(r.skipped)),
    ]
    for key, value in rows:
        console.print(f"[bold]{key:>15}[/bold]  {value}", highlight=False)
    nxt = upcoming(r, 3) if r.state == "active" else []
    console.print(
        f"[bold]{'next':>15}[/bold]  " + (", ".join(format_due(s.due, r.timezone) for s in nxt) or "-")
    )
    firings = store.firings(r.schedule_id, limit=args.limit)
    console.print(f"[bold]firings[/bold] (newest first, {len(firings)} shown):")
    states = {}
    for f in firings:
        if f.run_id:
            try:
                states[f.run_id] = store.registry.get(f.run_id).state
            except Exception:  # noqa: BLE001 - claimed but the run never reached the registry
                states[f.run_id] = "not in the registry"
    for f in firings:
        run = f"run {f.run_id} ({states.get(f.run_id)})" if f.run_id else "no run"
        what = {"claimed": "recorded, not submitted (the scheduler stopped before submitting)"}.get(
            f.state, f.state
        )
        message = f": {f.message}" if f.message else ""
        console.print(f"  {f.slot}  {what}{message}  {run}", highlight=False)
    console.print(
        f"next: maelstrom schedules next {r.schedule_id} | maelstrom runs info RUN_ID", highlight=False
    )
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    from ..schedule.scheduler import format_due, upcoming
    from ..schedule.timing import parse_now

    store = _store()
    r = store.get(args.id)
    times = upcoming(r, args.count, after=parse_now(args.now) if args.now else None)
    console = _console()
    console.print(f"{r.schedule_id}: '{r.cron}' in {r.timezone} ({r.state})", highlight=False)
    for slot in times:
        utc = slot.due.strftime("%Y-%m-%d %H:%M UTC")
        console.print(f"  {format_due(slot.due, r.timezone)}   ({utc}; slot {slot.key})", highlight=False)
    if not times:
        console.print("  no firing left before the end date", highlight=False)
    return 0


def cmd_pause(args: argparse.Namespace) -> int:
    store = _store()
    r = store.get(args.id)
    store.set_state(r.schedule_id, "paused")
    print(f"paused {r.schedule_id}; resume with `maelstrom schedules resume {r.schedule_id}`")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..schedule.timing import now_utc

    store = _store()
    r = store.get(args.id)
    if r.state == "ended":
        raise ConfigError(f"schedule {r.schedule_id} has ended (its end date passed); register a new one")
    # slots due while paused are not owed
    store.set_state(r.schedule_id, "active", checked_until=now_utc().timestamp())
    print(f"resumed {r.schedule_id}; next: maelstrom schedules next {r.schedule_id}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    store = _store()
    r = store.get(args.id)
    firings = len(store.firings(r.schedule_id))
    confirm(
        f"remove schedule {r.schedule_id} ({r.app}, {r.state}) and its {firings} firing record(s)",
        args.yes,
        f"maelstrom schedules remove {r.schedule_id}",
    )
    n = store.remove(r.schedule_id)
    print(
        f"removed {r.schedule_id} and its {n} firing record(s); its runs stay in the registry "
        f"(maelstrom search --text {r.schedule_id})"
    )
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ..schedule.export import export

    store = _store()
    records = [store.get(i) for i in args.id] if args.id else [r for r in store.list() if r.state == "active"]
    sys.stdout.write(export(records, args.format))
    print(
        f"# {len(records)} schedule(s) exported for {args.format}; each entry runs "
        "`maelstrom scheduler run --once --schedule ID` (a slot is never fired twice)",
        file=sys.stderr,
    )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from ..core.errors import ConfigError
    from ..schedule.scheduler import tick
    from ..schedule.timing import now_utc, parse_now

    if args.now and not args.once:
        raise ConfigError("--now needs --once (fire what is due at that time, then stop)")
    store = _store()
    if args.schedule:
        store.get(args.schedule)  # a clear error for an unknown id
    console = _console(stderr=True)
    totals = {"fired": 0, "skipped": 0, "failed": 0}
    grace = args.grace if args.grace is not None else max(300.0, 2 * args.interval)
    try:
        while True:
            now = parse_now(args.now) if args.now else now_utc()
            report = tick(now, grace_s=grace, only=args.schedule, store=store)
            for sid, slot, run_id in report.fired:
                console.print(
                    f"{now:%Y-%m-%d %H:%M:%S}Z fired {sid} slot {slot}: run {run_id}", highlight=False
                )
            for sid, slot, why in report.skipped:
                console.print(f"{now:%Y-%m-%d %H:%M:%S}Z skipped {sid} {slot}: {why}", highlight=False)
            for sid, slot, message in report.failed:
                console.print(
                    f"[red]{now:%Y-%m-%d %H:%M:%S}Z failed {sid} slot {slot}: {message}[/]", highlight=False
                )
            for sid in report.ended:
                console.print(f"{sid} reached its end date", highlight=False)
            totals["fired"] += len(report.fired)
            totals["skipped"] += len(report.skipped)
            totals["failed"] += len(report.failed)
            if args.once:
                break
            time.sleep(args.interval)
    except KeyboardInterrupt:
        console.print("scheduler stopped")
    console.print(
        f"{totals['fired']} firing(s), {totals['skipped']} skip note(s), {totals['failed']} failure(s); "
        "next: maelstrom runs list | maelstrom schedules list",
        highlight=False,
    )
    return 1 if totals["failed"] else 0


def add_commands(groups: Any) -> None:
    """Add ``schedules`` and ``scheduler`` to the ``maelstrom`` parser."""
    from .completion import schedule_ids

    schedules = groups.add_parser(
        "schedules",
        help="list, inspect, pause, resume, remove and export schedules",
        description="Schedules are registered with `maelstrom-run app=ap1 schedule=weekly` "
        "(or schedule=hourly|daily|monthly|quarterly, or schedule=cron \"schedule.cron='30 6 * * 1-5'\"); "
        "`maelstrom scheduler run` fires them. IDs may be shortened to a unique prefix.",
    )
    sub = schedules.add_subparsers(dest="command", required=True)
    p = sub.add_parser("list", help="every schedule with its next firing")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("show", help="a schedule and its firings")
    p.add_argument("id", help="schedule id (a unique prefix will do)").completer = schedule_ids  # type: ignore[attr-defined]
    p.add_argument("--limit", type=nonneg_int, default=20, help="firings shown (default: 20)")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("next", help="the next firing times of a schedule")
    p.add_argument("id", help="schedule id (a unique prefix will do)").completer = schedule_ids  # type: ignore[attr-defined]
    p.add_argument("-n", "--count", type=positive_int, default=5, help="how many firing times (default: 5)")
    p.add_argument("--now", metavar="ISO", help="from this time instead of now")
    p.set_defaults(func=cmd_next)
    for name, func, text in (
        ("pause", cmd_pause, "stop firing a schedule"),
        ("resume", cmd_resume, "fire a paused schedule again (slots due while paused are not fired)"),
        ("remove", cmd_remove, "delete a schedule (its runs stay in the registry)"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", help="schedule id (a unique prefix will do)").completer = schedule_ids  # type: ignore[attr-defined]
        if name == "remove":
            add_yes(p)
        p.set_defaults(func=func)
    p = sub.add_parser(
        "export",
        help="entries for the system's scheduler (crontab, Slurm scrontab, systemd timers)",
        description="Print entries that run `maelstrom scheduler run --once --schedule ID` at each schedule's "
        "firing times, for sites where the system's scheduler should drive them.",
    )
    p.add_argument(
        "id", nargs="*", help="schedules to export (default: every active one)"
    ).completer = schedule_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--format",
        choices=["crontab", "scrontab", "systemd"],
        default="crontab",
        help="crontab lines, Slurm scrontab lines, or systemd timer units (default: crontab)",
    )
    p.set_defaults(func=cmd_export)

    scheduler = groups.add_parser("scheduler", help="fire due schedules (a loop, or --once)")
    sub = scheduler.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "run",
        help="fire the slots that are due, as a loop or --once",
        description="Fire every slot that is due: each firing is an ordinary run (submitted without waiting), "
        "tagged maelstrom.schedule_id. Slots missed while no scheduler ran follow each schedule's catch-up "
        "policy; a slot is recorded before its run is submitted and never fired twice.",
    )
    p.add_argument("--once", action="store_true", help="fire what is due now and stop (for cron / systemd)")
    p.add_argument("--interval", type=positive_float, default=30.0, help="seconds between checks of the loop")
    p.add_argument("--schedule", metavar="ID", help="only this schedule").completer = schedule_ids  # type: ignore[attr-defined]
    p.add_argument(
        "--grace",
        type=nonneg_float,
        help="seconds a slot may be late and still count as on time for catch-up none "
        "(default: 300 or twice --interval)",
    )
    p.add_argument(
        "--now",
        metavar="ISO",
        help="with --once: act as if it were this time (testing, backfills; UTC unless an offset)",
    )
    p.set_defaults(func=cmd_run)


def print_registration(registration: Registration) -> None:
    """A registered schedule (or, for a dry run, what a firing would submit) and its next firings."""
    from ..schedule.scheduler import describe, format_due, upcoming
    from .console import make_console
    from .summaries import print_dry_run

    record, registered = registration.record, registration.registered
    if not registered:
        print_dry_run([registration.spec])
    console = make_console()
    what = "registered schedule" if registered else "dry run: would register a schedule"
    console.print(f"[bold]{what}[/bold] {record.schedule_id}", highlight=False)
    console.print(describe(record), highlight=False)
    times = upcoming(record)
    console.print("next firings:" if times else "no firing left before the end date", highlight=False)
    for slot in times:
        console.print(f"  {format_due(slot.due, record.timezone)}", highlight=False)
    if registered:
        console.print(
            "next: run `maelstrom scheduler run` (or `--once` from cron / a systemd timer: "
            f"`maelstrom schedules export --format crontab`); `maelstrom schedules show {record.schedule_id}`",
            highlight=False,
        )
