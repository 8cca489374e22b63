"""The run registry: SQLite rows per job and sweep, prefix lookups, WAL, concurrent writers."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.launch.registry import Registry


def make_spec(
    run_id: str, *, app: str = "ap1", sweep_id: str | None = None, index: int | None = None
) -> RunSpec:
    return RunSpec(
        run_id=run_id,
        kind="app",
        app=app,
        entry="toyapp:main",
        config={
            "app": {"name": app, "entry": "toyapp:main"},
            "backend": {"name": "local", "kind": "local"},
            "tracking": {"uri": None},
        },
        overrides=[f"app={app}"],
        run_dir=f"/nowhere/runs/{run_id}",
        config_hash="0" * 64,
        sweep_id=sweep_id,
        sweep_index=index,
    )


@pytest.fixture
def registry(maelstrom_home: Path) -> Registry:
    return Registry()


def test_default_path_is_under_maelstrom_home(maelstrom_home: Path, registry: Registry) -> None:
    assert registry.path == maelstrom_home / "registry.db"
    assert registry.path.exists()


def test_add_update_get(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-20260101-000000-aaaaaa")])
    record = registry.get("ap1-20260101-000000-aaaaaa")
    assert record.state == "queued"
    assert record.message == "submitting"
    assert record.app == "ap1"
    assert (record.backend, record.backend_kind) == ("local", "local")
    assert record.job_id is None
    assert RunSpec.from_dict(yaml.safe_load(record.spec)) == make_spec("ap1-20260101-000000-aaaaaa")

    registry.update("ap1-20260101-000000-aaaaaa", state="running", job_id="1234", started=12.5, message=None)
    record = registry.get("ap1-20260101-000000-aaaaaa")
    assert (record.state, record.job_id, record.started, record.message) == ("running", "1234", 12.5, None)


def test_update_rejects_unknown_fields(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-x")])
    with pytest.raises(KeyError, match="stat"):
        registry.update("ap1-x", stat="running")


def test_get_by_unique_prefix(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-20260101-000000-aaaaaa"), make_spec("ap2-20260101-000000-bbbbbb")])
    assert registry.get("ap1").run_id == "ap1-20260101-000000-aaaaaa"
    assert registry.get("ap2-2026").run_id == "ap2-20260101-000000-bbbbbb"


def test_get_exact_id_wins_over_prefix(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-1"), make_spec("ap1-10")])
    assert registry.get("ap1-1").run_id == "ap1-1"


def test_get_ambiguous_prefix(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-20260101-000000-aaaaaa"), make_spec("ap1-20260101-000000-bbbbbb")])
    with pytest.raises(ConfigError, match="ambiguous") as info:
        registry.get("ap1-2026")
    assert "ap1-20260101-000000-aaaaaa" in str(info.value)
    assert "ap1-20260101-000000-bbbbbb" in str(info.value)


def test_get_unknown_id(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-20260101-000000-aaaaaa")])
    with pytest.raises(ConfigError, match=r"run 'nope' is not in the registry .*maelstrom runs list"):
        registry.get("nope")


def test_get_percent_is_not_a_wildcard(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-20260101-000000-aaaaaa")])
    with pytest.raises(ConfigError, match="not in the registry"):
        registry.get("%000000")


def test_get_underscore_is_not_a_wildcard(registry: Registry) -> None:
    registry.add_runs([make_spec("my_app-1", app="my_app"), make_spec("myXapp-1", app="myXapp")])
    assert registry.get("my_app").run_id == "my_app-1"


def test_list_order_and_filters(registry: Registry) -> None:
    for i, run_id in enumerate(["ap1-a", "ap1-b", "ap1-c"]):
        registry.add_runs([make_spec(run_id)])
        registry.update(run_id, created=1000.0 + i)
    registry.update("ap1-b", state="failed")
    assert [r.run_id for r in registry.list()] == ["ap1-c", "ap1-b", "ap1-a"]  # newest first
    assert [r.run_id for r in registry.list(limit=2)] == ["ap1-c", "ap1-b"]
    assert [r.run_id for r in registry.list(states=["failed"])] == ["ap1-b"]
    assert [r.run_id for r in registry.list(states=["queued", "failed"])] == ["ap1-c", "ap1-b", "ap1-a"]
    assert registry.list(states=["succeeded"]) == []


def test_list_of_a_sweep_in_index_order(registry: Registry) -> None:
    specs = [make_spec(f"ap1-s{i}", sweep_id="sweep-1", index=i) for i in (2, 0, 1)]
    registry.add_runs(specs)
    registry.add_runs([make_spec("ap1-other", sweep_id="sweep-2", index=0), make_spec("ap1-single")])
    records = registry.list(sweep_id="sweep-1", limit=None)
    assert [(r.run_id, r.sweep_index) for r in records] == [("ap1-s0", 0), ("ap1-s1", 1), ("ap1-s2", 2)]
    assert [r.run_id for r in registry.list(sweep_id="sweep-1", states=["queued"], limit=1)] == ["ap1-s0"]


def test_sweeps(registry: Registry) -> None:
    overrides = [["model.learning_rate=0.1"], ["model.learning_rate=0.01"]]
    registry.add_sweep("ap1-sweep-abc", "ap1", 2, "local", overrides, "parent123", "sqlite:///x.db")
    sweep = registry.sweep("ap1-sweep-abc")
    assert (sweep.app, sweep.size, sweep.backend) == ("ap1", 2, "local")
    assert (sweep.mlflow_parent_run_id, sweep.tracking_uri, sweep.parent_closed) == (
        "parent123",
        "sqlite:///x.db",
        0,
    )
    assert json.loads(sweep.overrides) == overrides
    assert registry.sweep("ap1-sweep").sweep_id == "ap1-sweep-abc"  # unique prefix
    with pytest.raises(ConfigError, match="'nope' is not in the registry"):
        registry.sweep("nope")
    registry.add_sweep("ap1-sweep-abd", "ap1", 1, "local", [[]], None, None)
    with pytest.raises(ConfigError, match="ambiguous"):
        registry.sweep("ap1-sweep-ab")


def test_sweep_exact_id_wins_over_prefix(registry: Registry) -> None:
    registry.add_sweep("sweep-1", "ap1", 1, "local", [[]], None, None)
    registry.add_sweep("sweep-10", "ap1", 1, "local", [[]], None, None)
    assert registry.sweep("sweep-1").sweep_id == "sweep-1"


def test_close_parent_only_once(registry: Registry) -> None:
    registry.add_sweep("sw", "ap1", 2, "local", [[], []], "parent", "sqlite:///x.db")
    assert registry.close_parent("sw") is True
    assert registry.close_parent("sw") is False
    assert registry.sweep("sw").parent_closed == 1
    registry.reopen_parent("sw")
    assert registry.sweep("sw").parent_closed == 0
    assert registry.close_parent("sw") is True
    assert registry.close_parent("unknown-sweep") is False


def test_wal_mode(registry: Registry) -> None:
    registry.add_runs([make_spec("ap1-wal")])
    with sqlite3.connect(registry.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def _writer(path: str, name: str, count: int, barrier: Any) -> None:
    registry = Registry(Path(path))
    barrier.wait()
    for i in range(count):
        run_id = f"{name}-{i:03d}"
        registry.add_runs([make_spec(run_id)])
        registry.update(run_id, state="running", message=f"{name} {i}", job_id=str(i))
        registry.update("shared", message=f"{name} {i}")


def test_concurrent_writers_lose_nothing(registry: Registry) -> None:
    registry.add_runs([make_spec("shared")])
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(registry.path), n, 50, barrier)) for n in ("w1", "w2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    records = {r.run_id: r for r in registry.list(limit=None)}
    assert len(records) == 101
    for name in ("w1", "w2"):
        for i in range(50):
            r = records[f"{name}-{i:03d}"]
            assert (r.state, r.message, r.job_id) == ("running", f"{name} {i}", str(i))
    assert records["shared"].message in ("w1 49", "w2 49")


def test_unwritable_home_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: chmod does not make a directory unwritable")
        monkeypatch.setenv("MAELSTROM_HOME", str(locked / "home"))
        with pytest.raises(ConfigError, match="MAELSTROM_HOME"):
            Registry()
    finally:
        locked.chmod(stat.S_IRWXU)


def test_home_under_a_file_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unwritable even for root: the parent of MAELSTROM_HOME is a plain file
    (tmp_path / "file").write_text("not a directory")
    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(ConfigError, match=r"run registry .*set MAELSTROM_HOME to a writable directory"):
        Registry()


def test_runs_info_unknown_id_is_one_line(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["maelstrom", "runs", "info", "nope"], tmp_path, cli_env)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("maelstrom: error: run 'nope' is not in the registry")
    assert "Traceback" not in result.stderr + result.stdout
