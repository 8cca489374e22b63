"""RunSpec building and YAML round trip, secret references, git capture and materialisation."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_module

from maelstrom_run.config import secrets
from maelstrom_run.config.compose import resolve_config
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import SPEC_FILE, RunSpec
from maelstrom_run.launch.gitinfo import MAX_UNTRACKED_BYTES, capture, materialise
from maelstrom_run.launch.spec import build

SECRET_USER = "alice-S3CRET-user"
SECRET_PASSWORD = "hunter2-S3CRET-password"


def composed(overrides: list[str] | None = None) -> Any:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides or []))


def build_spec(overrides: list[str], code_dir: Path, **kwargs: Any) -> RunSpec:
    return build(composed(overrides), overrides, code_dir=code_dir, **kwargs)


# -- RunSpec ------------------------------------------------------------------------------


def test_build_fields(maelstrom_home: Path, tmp_path: Path) -> None:
    overrides = ["app=ap1", "train.epochs=2"]
    spec = build_spec(overrides, tmp_path)
    assert spec.run_id.startswith("ap1-")
    assert spec.kind == "app"
    assert spec.app == "ap1"
    assert spec.entry == "maelstrom_run.apps.ap1.train:main"
    assert spec.overrides == overrides
    assert spec.config["train"]["epochs"] == 2
    assert "hydra" not in spec.config
    assert spec.run_dir == str(maelstrom_home / "runs" / spec.run_id)
    assert spec.code_dir == str(tmp_path)
    assert spec.git is None  # tmp_path is not in a git repository
    assert len(spec.config_hash) == 64
    assert {"python", "hydra-core"} <= set(spec.packages)
    time.strptime(spec.created, "%Y-%m-%dT%H:%M:%S%z")
    assert (spec.sweep_id, spec.sweep_index, spec.sweep_size, spec.rerun_of) == (None, None, None, None)
    assert spec.backend["name"] == "local"
    assert spec.labels["task"] == "post-processing"


def test_run_ids_are_unique_and_prefixed_by_the_app(maelstrom_home: Path, tmp_path: Path) -> None:
    ids = {build_spec(["app=ap2"], tmp_path).run_id for _ in range(3)}
    assert len(ids) == 3
    assert all(i.startswith("ap2-") for i in ids)


def test_explicit_run_id_and_sweep_fields(maelstrom_home: Path, tmp_path: Path) -> None:
    spec = build_spec([], tmp_path, run_id="my-run", sweep_id="sw", sweep_index=1, sweep_size=3)
    assert (spec.run_id, spec.sweep_id, spec.sweep_index, spec.sweep_size) == ("my-run", "sw", 1, 3)
    assert spec.run_dir == str(maelstrom_home / "runs" / "my-run")


def test_workdir_sets_the_run_dir(maelstrom_home: Path, tmp_path: Path) -> None:
    spec = build_spec([f"backend.workdir={tmp_path / 'work'}"], tmp_path, run_id="r1")
    assert spec.run_dir == str(tmp_path / "work" / "r1")


def test_config_hash_stable_and_sensitive(maelstrom_home: Path, tmp_path: Path) -> None:
    a = build_spec(["app=ap1"], tmp_path)
    b = build_spec(["app=ap1"], tmp_path)
    c = build_spec(["app=ap1", "model.learning_rate=0.002"], tmp_path)
    assert a.run_id != b.run_id
    assert a.config_hash == b.config_hash
    assert a.config_hash != c.config_hash
    # the hash is over the config only (not the overrides that produced it)
    d = build_spec(["app=ap1", "model.learning_rate=0.001"], tmp_path)
    assert d.config_hash == a.config_hash


def test_yaml_round_trip(maelstrom_home: Path, tmp_path: Path) -> None:
    spec = build_spec(["app=ap2", "loader.threads=3"], tmp_path)
    path = spec.write(tmp_path / "out")
    assert path == tmp_path / "out" / SPEC_FILE
    assert RunSpec.read(path) == spec
    assert RunSpec.read(tmp_path / "out") == spec  # a directory means its spec.yaml
    assert yaml.safe_load(path.read_text())["config"]["loader"]["threads"] == 3
    # default location: the run directory
    assert spec.write() == Path(spec.run_dir) / SPEC_FILE
    assert RunSpec.read(Path(spec.run_dir)) == spec


def test_read_ignores_unknown_fields(tmp_path: Path, maelstrom_home: Path) -> None:
    spec = build_spec([], tmp_path)
    data = yaml.safe_load(spec.to_yaml())
    data["added_in_a_later_version"] = 1
    (tmp_path / SPEC_FILE).write_text(yaml.safe_dump(data))
    assert RunSpec.read(tmp_path) == spec


def test_read_missing_spec_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read run spec"):
        RunSpec.read(tmp_path / "missing" / SPEC_FILE)


def test_derive_keeps_the_config_hash(maelstrom_home: Path, tmp_path: Path) -> None:
    spec = build_spec([], tmp_path)
    again = spec.derive(run_id="ap1-again", rerun_of=spec.run_id)
    assert (again.config_hash, again.config) == (spec.config_hash, spec.config)
    assert again.rerun_of == spec.run_id


def test_resolve_config_drops_hydra_node() -> None:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
    assert "hydra" in cfg
    config = resolve_config(cfg)
    assert "hydra" not in config
    assert "hydra" in cfg  # the caller's config is left alone


# -- secrets ------------------------------------------------------------------------------


@pytest.fixture
def judoor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDOOR_USER", SECRET_USER)
    monkeypatch.setenv("JUDOOR_PASSWORD", SECRET_PASSWORD)


def test_spec_holds_secret_references_never_values(
    maelstrom_home: Path, tmp_path: Path, judoor: None
) -> None:
    spec = build_spec(["backend=juwels"], tmp_path)
    assert spec.backend["credentials"] == {
        "username": "${secret:env:JUDOOR_USER}",
        "password": "${secret:env:JUDOOR_PASSWORD}",
    }
    text = spec.write(tmp_path / "run").read_text()
    assert "${secret:env:JUDOOR_USER}" in text
    assert "${secret:env:JUDOOR_PASSWORD}" in text
    assert SECRET_USER not in text and SECRET_PASSWORD not in text
    assert SECRET_USER not in spec.to_yaml() and SECRET_PASSWORD not in spec.to_yaml()
    # the values are only produced on demand
    assert secrets.resolve_mapping(spec.backend["credentials"]) == {
        "username": SECRET_USER,
        "password": SECRET_PASSWORD,
    }
    # and the reference round-trips through the written spec
    assert RunSpec.read(tmp_path / "run").backend["credentials"] == spec.backend["credentials"]


def test_config_hash_does_not_depend_on_secret_values(
    maelstrom_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUDOOR_USER", "one")
    first = build_spec(["backend=juwels"], tmp_path)
    monkeypatch.setenv("JUDOOR_USER", "two")
    second = build_spec(["backend=juwels"], tmp_path)
    assert first.config_hash == second.config_hash


def test_resolve_env_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELSTROM_TEST_TOKEN", "tok-123")
    assert secrets.resolve("${secret:env:MAELSTROM_TEST_TOKEN}") == "tok-123"
    assert secrets.resolve(secrets.reference("env", "MAELSTROM_TEST_TOKEN")) == "tok-123"


def test_resolve_missing_env_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MAELSTROM_TEST_MISSING", raising=False)
    with pytest.raises(ConfigError) as info:
        secrets.resolve("${secret:env:MAELSTROM_TEST_MISSING}")
    message = str(info.value)
    assert "environment variable MAELSTROM_TEST_MISSING is not set" in message
    assert "\n" not in message


def test_resolve_file_reference(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("file-secret\n")
    assert secrets.resolve(f"${{secret:file:{token}}}") == "file-secret"  # stripped
    spaced = tmp_path / "with space"
    spaced.write_text("spaced-secret")
    ref = secrets.reference("file", str(spaced))
    assert ref == f"${{secret:'file:{spaced}'}}"
    assert secrets.resolve(ref) == "spaced-secret"


def test_resolve_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ConfigError, match=rf"cannot read {missing} \(No such file or directory\)"):
        secrets.resolve(f"${{secret:file:{missing}}}")


def test_resolve_unknown_kind_and_plain_values() -> None:
    with pytest.raises(ConfigError, match=r"unknown kind 'ldap'; use one of env, file, vault"):
        secrets.resolve("${secret:'ldap:cn=x#key'}")
    assert secrets.resolve("plain") == "plain"
    assert not secrets.is_reference("plain")


def test_reference_round_trips_quoted_form() -> None:
    from omegaconf import OmegaConf

    from maelstrom_run.config.resolvers import register

    ref = secrets.reference("vault", "kv/data/x#key")
    assert ref == "${secret:'vault:kv/data/x#key'}"
    assert secrets.is_reference(ref)
    register()
    register()  # idempotent
    cfg = OmegaConf.create({"plain": "${secret:env:A_B}", "quoted": ref})
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved == {"plain": "${secret:env:A_B}", "quoted": ref}
    # and again: a resolved reference resolves to itself
    assert OmegaConf.to_container(OmegaConf.create(resolved), resolve=True) == resolved


# -- git ----------------------------------------------------------------------------------


def _index_digest(repo: Path) -> str:
    return hashlib.sha256((repo / ".git" / "index").read_bytes()).hexdigest()


def _status(git: Callable[..., str], repo: Path) -> str:
    return git(repo, "status", "--porcelain", "--untracked-files=all")


def test_capture_clean_repository(toy_project: Path, git: Callable[..., str]) -> None:
    info = capture(toy_project)
    assert info is not None
    assert info["root"] == str(toy_project)
    assert info["commit"] == git(toy_project, "rev-parse", "HEAD").strip()
    assert info["branch"] == "main"
    assert info["dirty"] is False
    assert info["diff"] == ""


def test_capture_dirty_repository(toy_project: Path, git: Callable[..., str]) -> None:
    (toy_project / "toyapp.py").write_text((toy_project / "toyapp.py").read_text() + "# tuned\n")
    (toy_project / "helper.py").write_text("VALUE = 42\n")
    (toy_project / "pkg").mkdir()
    (toy_project / "pkg" / "deep.py").write_text("DEEP = 1\n")
    (toy_project / "train.log").write_text("ignored by .gitignore\n")
    (toy_project / "outputs").mkdir()
    (toy_project / "outputs" / "model.bin").write_bytes(b"\0ignored")
    git(toy_project, "add", "pkg/deep.py")  # one staged file, to see the index is left as it was

    _status(git, toy_project)  # git status may refresh the index: do it before taking the digest
    status, digest = _status(git, toy_project), _index_digest(toy_project)
    info = capture(toy_project / "pkg")  # from a subdirectory
    assert _status(git, toy_project) == status
    assert _index_digest(toy_project) == digest

    assert info is not None
    assert info["root"] == str(toy_project)
    assert info["dirty"] is True
    diff = info["diff"]
    assert "diff --git a/toyapp.py b/toyapp.py" in diff
    assert "+# tuned" in diff
    assert "diff --git a/helper.py b/helper.py" in diff and "+VALUE = 42" in diff
    assert "diff --git a/pkg/deep.py b/pkg/deep.py" in diff
    assert "train.log" not in diff
    assert "model.bin" not in diff


def test_capture_outside_a_repository(tmp_path: Path) -> None:
    assert capture(tmp_path) is None


def test_capture_repository_without_commits(tmp_path: Path, git: Callable[..., str]) -> None:
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    info = capture(tmp_path)
    assert info is not None
    assert info["commit"] is None
    assert info["dirty"] is False


def test_build_records_git(maelstrom_home: Path, toy_project: Path, git: Callable[..., str]) -> None:
    (toy_project / "toyapp.py").write_text((toy_project / "toyapp.py").read_text() + "# tuned\n")
    spec = build_spec([], toy_project)
    assert spec.git is not None
    assert spec.git["commit"] == git(toy_project, "rev-parse", "HEAD").strip()
    assert spec.git["dirty"] is True
    assert RunSpec.read(spec.write(toy_project / "outputs")).git == spec.git


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def test_materialise_reproduces_the_working_tree(
    toy_project: Path, tmp_path: Path, git: Callable[..., str]
) -> None:
    (toy_project / "toyapp.py").write_text((toy_project / "toyapp.py").read_text() + "# tuned\n")
    (toy_project / "helper.py").write_text("VALUE = 42\n")
    (toy_project / "data.bin").write_bytes(bytes(range(256)))
    (toy_project / "conf" / "app" / "toy.yaml").unlink()
    (toy_project / "train.log").write_text("ignored\n")
    info = capture(toy_project)
    assert info is not None

    # the user keeps working after the run: the recorded state must still come back
    (toy_project / "toyapp.py").write_text("# rewritten later\n")
    git(toy_project, "add", "-A")
    git(toy_project, "commit", "-q", "-m", "later")

    dest = materialise(info, tmp_path / "worktrees" / "run-1")
    assert dest == tmp_path / "worktrees" / "run-1"
    got = _tree(dest)
    assert got["toyapp.py"].endswith(b"# tuned\n")
    assert got["helper.py"] == b"VALUE = 42\n"
    assert got["data.bin"] == bytes(range(256))
    assert "conf/app/toy.yaml" not in got
    assert "train.log" not in got
    assert git(dest, "rev-parse", "HEAD").strip() == info["commit"]


def test_materialise_clean_commit(toy_project: Path, tmp_path: Path) -> None:
    info = capture(toy_project)
    assert info is not None
    dest = materialise(info, tmp_path / "wt")
    assert _tree(dest) == _tree(toy_project)


def test_materialise_errors(toy_project: Path, tmp_path: Path) -> None:
    info = capture(toy_project)
    assert info is not None
    with pytest.raises(ConfigError, match="no commit recorded"):
        materialise({**info, "commit": None}, tmp_path / "a")
    with pytest.raises(ConfigError, match="too large"):
        materialise({**info, "diff": None, "dirty": True}, tmp_path / "b")
    with pytest.raises(ConfigError, match="is gone"):
        materialise({**info, "root": str(tmp_path / "gone")}, tmp_path / "c")
    with pytest.raises(ConfigError, match="cannot restore commit"):
        materialise({**info, "commit": "0" * 40}, tmp_path / "d")


def test_git_capture_needs_no_git_identity(toy_project: Path, tmp_path: Path) -> None:
    # capture only reads: it works without user.name/user.email (e.g. on a fresh cluster account)
    (toy_project / "new.py").write_text("n = 1\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(HOME=str(tmp_path), GIT_CONFIG_NOSYSTEM="1")
    code = (
        "import sys; from pathlib import Path; from maelstrom_run.launch.gitinfo import capture; "
        "info = capture(Path(sys.argv[1])); print(info['dirty'], 'new.py' in info['diff'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(toy_project)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == ["True", "True"]


def test_capture_leaves_large_untracked_files_out(toy_project: Path) -> None:
    (toy_project / "notes.py").write_text("SMALL = True\n")
    (toy_project / "forecast.nc").write_bytes(b"\0" * (MAX_UNTRACKED_BYTES + 1))
    info = capture(toy_project)
    assert info is not None and "+SMALL = True" in info["diff"]
    assert "forecast.nc" not in info["diff"]
    assert info["untracked_not_recorded"] == ["forecast.nc"]
    # nothing of the large file entered the repository's object store
    objects = subprocess.run(
        ["git", "count-objects", "-v"], cwd=toy_project, capture_output=True, text=True
    ).stdout
    assert int(dict(line.split(": ") for line in objects.splitlines())["size"]) < MAX_UNTRACKED_BYTES // 1024
