"""Schedules: firing times across DST, validation, the restart-safe scheduler, catch-up, export, CLI."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from hydra import compose, initialize_config_module

from maelstrom_run.config import validate
from maelstrom_run.config.compose import resolve_config
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.launch.gitinfo import capture
from maelstrom_run.launch.registry import Registry
from maelstrom_run.schedule import timing
from maelstrom_run.schedule.export import export, on_calendar
from maelstrom_run.schedule.scheduler import TAG, make_spec, tick, upcoming
from maelstrom_run.schedule.store import ScheduleRecord, ScheduleStore

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
ERROR = "maelstrom-run: error: "


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def berlin(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=BERLIN)


# -- firing times -----------------------------------------------------------------------------


def test_daily_across_the_spring_change_fires_once_at_the_change() -> None:
    slots = list(timing.slots("30 2 * * *", "Europe/Berlin", berlin("2026-03-27T12:00"), limit=3))
    assert [s.key for s in slots] == ["2026-03-28T02:30", "2026-03-29T02:30", "2026-03-30T02:30"]
    local = [s.due.astimezone(BERLIN) for s in slots]
    # 02:30 does not exist on 2026-03-29: due once, at the change (03:00 CEST = 01:00 UTC)
    assert local[1].strftime("%H:%M %Z") == "03:00 CEST"
    assert slots[1].due == utc("2026-03-29T01:00")
    assert local[0].strftime("%H:%M %Z") == "02:30 CET" and local[2].strftime("%H:%M %Z") == "02:30 CEST"


def test_daily_across_the_autumn_change_fires_once_at_the_first_occurrence() -> None:
    slots = list(timing.slots("30 2 * * *", "Europe/Berlin", berlin("2026-10-24T12:00"), limit=2))
    assert [s.key for s in slots] == ["2026-10-25T02:30", "2026-10-26T02:30"]
    assert slots[0].due == utc("2026-10-25T00:30")  # 02:30 CEST, not also 02:30 CET an hour later
    assert slots[1].due.astimezone(BERLIN).strftime("%H:%M %Z") == "02:30 CET"


def test_hourly_across_both_changes_never_repeats_a_slot_and_never_goes_back() -> None:
    for start in ("2026-03-28T20:00", "2026-10-24T20:00"):
        slots = list(timing.slots("0 * * * *", "Europe/Berlin", berlin(start), limit=12))
        keys = [s.key for s in slots]
        assert len(set(keys)) == len(keys) == 12
        assert all(a.due <= b.due for a, b in zip(slots, slots[1:], strict=False))
        assert all(s.due > berlin(start) for s in slots)


def test_slots_honour_until_and_are_strictly_after() -> None:
    after = utc("2026-01-01T03:00")
    slots = list(timing.slots("0 3 * * *", "UTC", after, until=utc("2026-01-04T03:00")))
    assert [s.key for s in slots] == ["2026-01-02T03:00", "2026-01-03T03:00", "2026-01-04T03:00"]


# -- validation at composition ----------------------------------------------------------------


def composed(*overrides: str) -> dict[str, Any]:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        return resolve_config(compose("config", overrides=list(overrides)))


def test_every_preset_composes_and_validates() -> None:
    validate(composed("schedule=none"))
    for name in ("hourly", "daily", "weekly", "monthly", "quarterly"):
        config = composed(f"schedule={name}", "schedule.timezone=Europe/Berlin")
        validate(config)
        assert config["schedule"]["name"] == name
    config = composed("schedule=cron", "schedule.cron=30 6 * * 1-5")
    validate(config)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["schedule=cron"], "schedule.cron: missing mandatory value"),
        (["schedule=cron", "schedule.cron=61 * * * *"], "schedule.cron: '61 * * * *' is not a valid cron"),
        (
            ["schedule=cron", "schedule.cron=0 3 * *"],
            "schedule.cron: '0 3 * *' is not a valid cron expression: ",
        ),
        (["schedule=daily", "schedule.timezone=Europe/Berln"], "did you mean 'Europe/Berlin'?"),
        (["schedule=daily", "schedule.timezone=Mars/Olympus"], "schedule.timezone: unknown time zone"),
        (
            ["schedule=daily", "schedule.start=2026-05-01", "schedule.end=2026-04-30"],
            "schedule.end: 2026-04-30 is not after schedule.start 2026-05-01",
        ),
        (["schedule=daily", "schedule.end=soon"], "schedule.end: 'soon' is not a date"),
        (
            ["schedule=weekly", "schedule.max_concurrent=0"],
            "schedule.max_concurrent: 0 is out of range; it must be >= 1",
        ),
        (["schedule=weekly", "schedule.catchup=some"], "schedule.catchup: 'some' is not one of"),
    ],
)
def test_bad_schedules_are_rejected_naming_the_key(overrides: list[str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(composed(*overrides))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


# -- the scheduler, with a chosen clock -------------------------------------------------------


@pytest.fixture
def store(maelstrom_home: Path) -> ScheduleStore:
    return ScheduleStore()


def add_schedule(
    store: ScheduleStore,
    code: Path,
    *,
    cron: str = "0 * * * *",
    tz: str = "UTC",
    start: str = "2026-01-01T00:00",
    end: str | None = None,
    catchup: str = "last",
    max_concurrent: int = 5,
    pinned: str | None = None,
    schedule_id: str = "sched-toy-1",
) -> ScheduleRecord:
    """A schedule of the toy app, as ``maelstrom-run app=toy schedule=...`` registers it."""
    config = {
        "app": {"name": "toy", "entry": "toyapp:main"},
        "backend": {"name": "local", "kind": "local"},
        "tracking": {"uri": None},
        "labels": {"task": "post-processing"},
        "tags": {TAG: schedule_id},
    }
    template = RunSpec(
        run_id="template",
        kind="app",
        app="toy",
        entry="toyapp:main",
        config=config,
        overrides=["app=toy"],
        run_dir=str(Path(store.path).parent / "runs" / "template"),
        config_hash="0" * 64,
        code_dir=str(code),
        git=capture(code),
    )
    tzinfo = ZoneInfo(tz)
    start_ts = dt.datetime.fromisoformat(start).replace(tzinfo=tzinfo).timestamp()
    record = ScheduleRecord(
        schedule_id=schedule_id,
        app="toy",
        preset="cron",
        cron=cron,
        timezone=tz,
        start=start_ts,
        end=dt.datetime.fromisoformat(end).replace(tzinfo=tzinfo).timestamp() if end else None,
        catchup=catchup,
        max_concurrent=max_concurrent,
        pinned_commit=pinned,
        state="active",
        checked_until=start_ts,
        skipped=0,
        code_dir=str(code),
        overrides=json.dumps(["app=toy", f"schedule.cron={cron}"]),
        spec=template.to_yaml(),
        created=time.time(),
    )
    store.add(record)
    return record


class RecordOnly:
    """Submission that records the runs in the registry (as ``submit`` does first) without a backend;
    ``state`` is what the backend would report later."""

    def __init__(self, state: str = "succeeded") -> None:
        self.specs: list[RunSpec] = []
        self.state = state

    def __call__(self, specs: list[RunSpec], wait: bool, registry: Registry) -> list[Any]:
        registry.add_runs(specs)
        for spec in specs:
            registry.update(spec.run_id, state=self.state)
        self.specs += specs
        return [registry.get(s.run_id) for s in specs]


def fired_slots(store: ScheduleStore, schedule_id: str = "sched-toy-1") -> list[str]:
    return sorted(f.slot for f in store.firings(schedule_id) if f.state == "submitted")


def test_each_firing_is_a_run_of_the_template_on_the_current_code(
    store: ScheduleStore, toy_project: Path, git: Callable[..., str]
) -> None:
    add_schedule(store, toy_project)
    (toy_project / "toyapp.py").write_text((toy_project / "toyapp.py").read_text() + "\n# changed\n")
    git(toy_project, "commit", "-qam", "newer code")
    head = git(toy_project, "rev-parse", "HEAD").strip()
    submit = RecordOnly()
    report = tick(utc("2026-01-01T01:00"), store=store, submit=submit)
    (spec,) = submit.specs
    assert report.fired == [("sched-toy-1", "2026-01-01T01:00", spec.run_id)]
    assert spec.git["commit"] == head and spec.code_dir == str(toy_project)
    assert spec.config["tags"][TAG] == "sched-toy-1"
    assert spec.rerun_of is None and spec.run_id.startswith("toy-")
    assert store.registry.get(spec.run_id).state == "succeeded"


def test_a_pinned_commit_runs_in_a_worktree(
    store: ScheduleStore, toy_project: Path, git: Callable[..., str], maelstrom_home: Path
) -> None:
    pinned = git(toy_project, "rev-parse", "HEAD").strip()
    original = (toy_project / "toyapp.py").read_text()
    (toy_project / "toyapp.py").write_text(original + "\n# newer\n")
    git(toy_project, "commit", "-qam", "newer code")
    record = add_schedule(store, toy_project, pinned=pinned)
    spec = make_spec(record)
    assert spec.git["commit"] == pinned
    assert Path(spec.code_dir).is_relative_to(maelstrom_home / "worktrees")
    assert (Path(spec.code_dir) / "toyapp.py").read_text() == original


def test_a_slot_is_never_fired_twice(store: ScheduleStore, toy_project: Path) -> None:
    add_schedule(store, toy_project)
    submit = RecordOnly()
    tick(utc("2026-01-01T01:00:10"), store=store, submit=submit)
    tick(utc("2026-01-01T01:00:20"), store=store, submit=submit)
    tick(utc("2026-01-01T01:59"), store=store, submit=submit)
    assert len(submit.specs) == 1
    # even if the schedule's progress were lost, the recorded firing keeps the slot from firing again
    with store.registry._connect() as db:
        db.execute("UPDATE schedules SET checked_until = start")
    tick(utc("2026-01-01T01:30"), store=store, submit=submit)
    assert fired_slots(store) == ["2026-01-01T01:00"] and len(submit.specs) == 1


KILLED_BEFORE_SUBMIT = textwrap.dedent(
    """\
    import os, signal, sys
    from maelstrom_run.schedule.scheduler import tick
    from maelstrom_run.schedule.timing import parse_now

    def killed(specs, wait, registry):
        os.kill(os.getpid(), signal.SIGKILL)  # the machine dies after the firing is recorded

    tick(parse_now(sys.argv[1]), submit=killed)
    """
)


def test_a_crash_after_recording_never_fires_the_slot_again(
    store: ScheduleStore, toy_project: Path, cli_env: dict[str, str], tmp_path: Path
) -> None:
    add_schedule(store, toy_project, catchup="all")
    script = tmp_path / "killed.py"
    script.write_text(KILLED_BEFORE_SUBMIT)
    proc = subprocess.run(
        [sys.executable, str(script), "2026-01-01T01:00:05"], env=cli_env, capture_output=True, text=True
    )
    assert proc.returncode == -9, proc.stderr
    (firing,) = store.firings("sched-toy-1")
    assert (firing.slot, firing.state) == ("2026-01-01T01:00", "claimed")
    # restart: the same time and later; the 01:00 slot stays recorded and is not fired again
    submit = RecordOnly()
    tick(utc("2026-01-01T01:00:30"), store=ScheduleStore(), submit=submit)
    tick(utc("2026-01-01T02:00:30"), store=ScheduleStore(), submit=submit)
    assert [s.config["tags"][TAG] for s in submit.specs] == ["sched-toy-1"]
    states = {f.slot: f.state for f in store.firings("sched-toy-1")}
    assert states == {"2026-01-01T01:00": "claimed", "2026-01-01T02:00": "submitted"}


@pytest.mark.parametrize(
    ("catchup", "expected"),
    [
        ("all", ["2026-01-01T01:00", "2026-01-01T02:00", "2026-01-01T03:00", "2026-01-01T04:00"]),
        ("last", ["2026-01-01T04:00"]),
        ("none", []),
    ],
)
def test_catch_up_after_downtime(
    store: ScheduleStore, toy_project: Path, catchup: str, expected: list[str]
) -> None:
    add_schedule(store, toy_project, catchup=catchup)
    # the scheduler was down from 00:00 and comes back at 04:20 (the 04:00 slot is 20 minutes late)
    report = tick(utc("2026-01-01T04:20"), grace_s=300, store=store, submit=RecordOnly())
    assert fired_slots(store) == expected
    assert store.get("sched-toy-1").skipped == 4 - len(expected)
    assert sum(1 for s in report.skipped if "missed" in s[1]) == (len(expected) < 4)
    # back to normal: the next slot is fired on time whatever the policy
    tick(utc("2026-01-01T05:00:30"), grace_s=300, store=store, submit=RecordOnly())
    assert fired_slots(store)[-1] == "2026-01-01T05:00"


def test_catch_up_none_fires_a_slot_that_is_on_time(store: ScheduleStore, toy_project: Path) -> None:
    add_schedule(store, toy_project, catchup="none")
    tick(utc("2026-01-01T01:02"), grace_s=300, store=store, submit=RecordOnly())
    assert fired_slots(store) == ["2026-01-01T01:00"]


def test_the_end_date_is_honoured(store: ScheduleStore, toy_project: Path) -> None:
    add_schedule(store, toy_project, cron="0 3 * * *", catchup="all", end="2026-01-03T12:00")
    report = tick(utc("2026-01-10T00:00"), store=store, submit=RecordOnly())
    assert fired_slots(store) == ["2026-01-01T03:00", "2026-01-02T03:00", "2026-01-03T03:00"]
    assert report.ended == ["sched-toy-1"]
    record = store.get("sched-toy-1")
    assert record.state == "ended" and upcoming(record, after=utc("2026-01-02T00:00")) == []
    tick(utc("2026-02-01T00:00"), store=store, submit=RecordOnly())
    assert len(fired_slots(store)) == 3


def test_the_dst_schedule_fires_each_day_once(store: ScheduleStore, toy_project: Path) -> None:
    add_schedule(
        store, toy_project, cron="30 2 * * *", tz="Europe/Berlin", start="2026-03-27T12:00", catchup="all"
    )
    submit = RecordOnly()
    hour = utc("2026-03-27T12:00")
    while hour < utc("2026-03-31T00:00"):  # an hourly scheduler across the spring change
        hour += dt.timedelta(minutes=30)
        tick(hour, store=store, submit=submit)
    assert fired_slots(store) == ["2026-03-28T02:30", "2026-03-29T02:30", "2026-03-30T02:30"]
    due = {f.slot: f.due for f in store.firings("sched-toy-1")}
    assert due["2026-03-29T02:30"] == utc("2026-03-29T01:00").timestamp()


def test_max_concurrent_skips_a_slot_while_runs_are_unfinished(
    store: ScheduleStore, toy_project: Path
) -> None:
    add_schedule(store, toy_project, max_concurrent=1)
    still_queued = RecordOnly(state="queued")
    tick(utc("2026-01-01T01:00:10"), store=store, submit=still_queued)
    report = tick(utc("2026-01-01T02:00:10"), store=store, submit=still_queued)
    assert len(still_queued.specs) == 1
    assert report.skipped and "max_concurrent 1" in report.skipped[0][2]
    states = {f.slot: f.state for f in store.firings("sched-toy-1")}
    assert states == {"2026-01-01T01:00": "submitted", "2026-01-01T02:00": "skipped"}
    store.registry.update(still_queued.specs[0].run_id, state="succeeded")
    tick(utc("2026-01-01T03:00:10"), store=store, submit=still_queued)
    assert fired_slots(store) == ["2026-01-01T01:00", "2026-01-01T03:00"]


def test_a_gone_code_directory_fails_the_firing_and_keeps_the_others(
    store: ScheduleStore, toy_project: Path, tmp_path: Path
) -> None:
    add_schedule(store, toy_project, schedule_id="sched-toy-1")
    add_schedule(store, tmp_path / "gone", schedule_id="sched-toy-2")
    report = tick(utc("2026-01-01T01:00:10"), store=store, submit=RecordOnly())
    assert [f[0] for f in report.fired] == ["sched-toy-1"]
    assert report.failed[0][0] == "sched-toy-2" and "is gone" in report.failed[0][2]


# -- export -----------------------------------------------------------------------------------


def test_export_formats(store: ScheduleStore, toy_project: Path, maelstrom_home: Path) -> None:
    record = add_schedule(store, toy_project, cron="30 2 * * 1-5", tz="Europe/Berlin")
    cron = export([record], "crontab")
    assert "CRON_TZ=Europe/Berlin\n30 2 * * 1-5 cd " in cron
    assert (
        "scheduler run --once --schedule sched-toy-1" in cron and f"MAELSTROM_HOME={maelstrom_home}" in cron
    )
    scron = export([record], "scrontab")
    assert "#SCRON --job-name=maelstrom-sched-toy-1" in scron and "\n30 2 * * 1-5 cd " in scron
    unit = export([record], "systemd")
    assert "OnCalendar=Mon,Tue,Wed,Thu,Fri *-*-* 02:30:00 Europe/Berlin" in unit
    assert "[Service]\nType=oneshot\nExecStart=/bin/sh -c " in unit and "WantedBy=timers.target" in unit


def test_systemd_calendar_of_cron_fields() -> None:
    assert on_calendar("0 3 1 1,4,7,10 *", "UTC") == ["*-01,04,07,10-01 03:00:00 UTC"]
    assert on_calendar("*/15 6-8 * * *", "UTC") == ["*-*-* 06,07,08:00,15,30,45:00 UTC"]
    # cron runs when either day field matches: two calendar lines
    assert on_calendar("0 0 1 * 0", "UTC") == ["*-*-01 00:00:00 UTC", "Sun *-*-* 00:00:00 UTC"]
    with pytest.raises(ConfigError, match="--format crontab"):
        on_calendar("0 3 L * *", "UTC")


# -- the command line -------------------------------------------------------------------------


def test_cli_bad_input_is_one_line_and_records_nothing(
    run_cli: Callable[..., Any], cli_env: dict[str, str], toy_project: Path, maelstrom_home: Path
) -> None:
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    ok = run_cli(["app=toy", "schedule=weekly"], cwd=toy_project, env=env, check=True)
    (sid,) = [w for w in ok.stdout.split() if w.startswith("sched-toy-")][:1]
    for args, expected in [
        (
            ["app=toy", "schedule=cron", "schedule.cron='99 * * * *'"],
            "schedule.cron: '99 * * * *' is not a valid",
        ),
        (["app=toy", "schedule=daily", "schedule.timezone=Europe/Berln"], "did you mean 'Europe/Berlin'?"),
        (
            ["app=toy", "schedule=daily", "schedule.start=2026-06-01", "schedule.end=2026-05-01"],
            "schedule.end: 2026-05-01 is not after schedule.start 2026-06-01",
        ),
        (
            ["app=toy", "schedule=daily", "schedule.commit=nosuchref"],
            "schedule.commit: 'nosuchref' is not a commit",
        ),
        (["--multirun", "app=toy", "train.epochs=1,2", "schedule=daily"], "register one schedule per job"),
    ]:
        result = run_cli(args, cwd=toy_project, env=env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith(ERROR) and expected in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    for args in (["show", "nosuch"], ["pause", "nosuch"], ["remove", "nosuch"], ["next", "nosuch"]):
        result = run_cli(["maelstrom", "schedules", *args], env=cli_env)
        assert result.returncode == 2
        assert (
            result.stderr
            == "maelstrom: error: schedule 'nosuch' does not exist; see `maelstrom schedules list`\n"
        )
    listing = run_cli(["maelstrom", "schedules", "list"], env=cli_env, check=True).stdout
    assert listing.count("sched-toy-") == 1 and sid in listing
    assert ScheduleStore().list()[0].schedule_id == sid and Registry().list() == []


def test_cli_register_next_pause_resume_remove(
    run_cli: Callable[..., Any], cli_env: dict[str, str], toy_project: Path
) -> None:
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    result = run_cli(
        ["app=toy", "schedule=daily", "schedule.timezone=Europe/Berlin", "schedule.start=2030-03-30T00:00"],
        cwd=toy_project,
        env=env,
        check=True,
    )
    (sid,) = [w for w in result.stdout.split() if w.startswith("sched-toy-")][:1]
    # the clocks change on 2030-03-31
    assert "next firings:\n  2030-03-30 03:00 CET\n  2030-03-31 03:00 CEST\n" in result.stdout
    (record,) = ScheduleStore().list()
    assert record.cron == "0 3 * * *" and record.timezone == "Europe/Berlin"
    template = RunSpec.from_dict(yaml.safe_load(record.spec))
    assert template.config["tags"][TAG] == sid and template.git["root"] == str(toy_project)

    nxt = run_cli(["maelstrom", "schedules", "next", sid[:14], "-n", "2"], env=cli_env, check=True).stdout
    assert "2030-03-30 03:00 CET" in nxt and "2030-03-31 03:00 CEST" in nxt
    assert "paused" in run_cli(["maelstrom", "schedules", "pause", sid], env=cli_env, check=True).stdout
    assert ScheduleStore().get(sid).state == "paused"
    assert "resumed" in run_cli(["maelstrom", "schedules", "resume", sid], env=cli_env, check=True).stdout
    show = run_cli(["maelstrom", "schedules", "show", sid], env=cli_env, check=True).stdout
    assert "active" in show and "schedule.timezone=Europe/Berlin" in show
    exported = run_cli(["maelstrom", "schedules", "export", "--format", "crontab"], env=cli_env, check=True)
    assert f"--schedule {sid}" in exported.stdout
    removed = run_cli(["maelstrom", "schedules", "remove", sid, "--yes"], env=cli_env, check=True).stdout
    assert "removed" in removed and ScheduleStore().list() == []


@pytest.mark.slow
def test_end_to_end_a_scheduled_toy_run_is_submitted_tagged_and_finishes(
    run_cli: Callable[..., Any], cli_env: dict[str, str], toy_project: Path
) -> None:
    import mlflow

    from maelstrom_run.core.paths import default_tracking_uri
    from maelstrom_run.launch.monitor import TERMINAL, refresh

    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    run_cli(
        [
            "app=toy",
            "schedule=cron",
            "schedule.cron='15 4 * * *'",
            "schedule.start=2026-01-01",
            "train.epochs=2",
        ],
        cwd=toy_project,
        env=env,
        check=True,
    )
    (record,) = ScheduleStore().list()
    fired = run_cli(
        ["maelstrom", "scheduler", "run", "--once", "--now", "2026-01-01T04:15:30Z"], env=env, check=True
    )
    assert "1 firing(s)" in fired.stderr
    (firing,) = ScheduleStore().firings(record.schedule_id)
    assert firing.slot == "2026-01-01T04:15" and firing.state == "submitted"
    registry = Registry()
    run = registry.get(firing.run_id)
    assert run.job_id and run.backend == "local"
    deadline = time.monotonic() + 180
    while run.state not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        (run,) = refresh(registry, [run])
    assert run.state == "succeeded", run.message
    tags = mlflow.MlflowClient(default_tracking_uri()).get_run(run.mlflow_run_id).data.tags
    assert tags[TAG] == record.schedule_id and tags["label.task"] == "post-processing"
    # the same slot again (a second scheduler, or after a restart) fires nothing
    again = run_cli(
        ["maelstrom", "scheduler", "run", "--once", "--now", "2026-01-01T04:16Z"], env=env, check=True
    )
    assert "0 firing(s)" in again.stderr and len(registry.list()) == 1
