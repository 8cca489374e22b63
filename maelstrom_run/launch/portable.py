"""A run as one portable file: ``runs export RUN_ID FILE.tar.gz`` and ``runs import FILE.tar.gz``.

The archive holds what re-running and judging the run needs: the RunSpec (resolved config,
overrides, git commit and the uncommitted diff, which has the small untracked files in it), the
overrides and the diff again as plain files, the package versions as a requirements file, the
worker's result with the final metrics, the registry record and the logs (their last megabyte).
Import reads the members into memory (never extracts paths from the archive), writes a fresh run
directory in this ``$MAELSTROM_HOME`` and records the run, so ``runs info`` and ``runs rerun``
work here; nothing already recorded is touched.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import time
import zlib
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import ConfigError
from ..core.rundir import RunDir, write_atomic
from ..core.spec import RunSpec
from .envdrift import requirements
from .gitinfo import repository_with
from .registry import Registry, RunRecord

FORMAT = "maelstrom-run-export"
VERSION = 1
ROOT = "maelstrom-run-export"
#: Logs beyond this are cut to their end (the archive is a record, not a backup).
MAX_LOG_BYTES = 1_000_000
#: A member larger than this is not one of ours: refused before it is read.
MAX_MEMBER_BYTES = 200_000_000
_MEMBERS = {
    "manifest.json",
    "spec.json",
    "overrides.txt",
    "git.diff",
    "requirements.txt",
    "result.json",
    "metrics.json",
    "stdout.log",
    "stderr.log",
}


@dataclasses.dataclass
class Imported:
    run_id: str
    run_dir: Path
    state: str
    #: Where the recorded commit was found (re-runs check it out from there).
    repository: str | None


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{ROOT}/{name}")
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _tail(path: Path) -> bytes | None:
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(0, size - MAX_LOG_BYTES))
            return fh.read()
    except OSError:
        return None


def export_run(registry: Registry, run_id: str, dest: Path, *, force: bool = False) -> tuple[RunRecord, Path]:
    """Write run ``run_id`` as ``dest`` (a .tar.gz); returns the record and the file written."""
    record = registry.get(run_id)
    spec = RunSpec.parse(record.spec)
    if spec.kind != "app":
        raise ConfigError(f"run {spec.run_id} is a job of a plain Hydra app; only maelstrom-run runs export")
    dest = Path(dest)
    if not dest.name.endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"{dest}: name the archive FILE.tar.gz")
    if dest.exists() and not force:
        raise ConfigError(f"{dest} exists; choose another name, or --force to replace it")
    run_dir = RunDir(record.run_dir)
    result = run_dir.read_result()
    fields = {k: v for k, v in dataclasses.asdict(record).items() if k != "spec"}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "run_id": spec.run_id,
        "exported": time.time(),
        "record": fields,
    }
    members: dict[str, bytes] = {
        "manifest.json": json.dumps(manifest, indent=2).encode(),
        "spec.json": (json.dumps(dataclasses.asdict(spec), indent=2, ensure_ascii=False) + "\n").encode(),
        "overrides.txt": "".join(f"{o}\n" for o in spec.overrides).encode(),
        "git.diff": ((spec.git or {}).get("diff") or "").encode(),
        "requirements.txt": requirements(spec.packages, f"run {spec.run_id}").encode(),
        "metrics.json": json.dumps(result.metrics if result else {}, indent=2, sort_keys=True).encode(),
    }
    if result is not None:
        members["result.json"] = json.dumps(result.to_dict(), indent=2).encode()
    for stream in ("stdout", "stderr"):
        data = _tail(run_dir.log(stream))
        if data is not None:
            members[f"{stream}.log"] = data
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            _add(tar, name, data)
    write_atomic(dest, buffer.getvalue())
    return record, dest


def _read(path: Path) -> dict[str, bytes]:
    """Our members of the archive, in memory; anything else in it is refused."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    members: dict[str, bytes] = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                name = member.name
                if not name.startswith(f"{ROOT}/"):
                    raise ConfigError(f"{path}: not a maelstrom-run export (it holds {name!r})")
                name = name[len(ROOT) + 1 :]
                if member.isdir() and not name:
                    continue
                if not member.isfile() or name not in _MEMBERS:
                    raise ConfigError(
                        f"{path}: unexpected member {member.name!r}; not a maelstrom-run export"
                    )
                if member.size > MAX_MEMBER_BYTES:
                    raise ConfigError(f"{path}: member {member.name!r} is too large for a run record")
                handle = tar.extractfile(member)
                assert handle is not None
                members[name] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise ConfigError(f"{path}: damaged or not a .tar.gz archive ({exc}); export it again") from None
    if "manifest.json" not in members or "spec.json" not in members:
        raise ConfigError(f"{path}: not a maelstrom-run export (no manifest.json or spec.json)")
    return members


def _json(path: Path, members: dict[str, bytes], name: str) -> Any:
    try:
        return json.loads(members[name])
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"{path}: {name} is damaged; export the run again") from None


def _relocate(spec: RunSpec, repository: Path) -> dict[str, Any]:
    """The spec's git record and code directory moved to ``repository`` (same commit and diff)."""
    git = dict(spec.git or {})
    old = Path(git.get("root") or repository)
    code = Path(spec.code_dir or old)
    try:
        code_dir = str(repository / code.relative_to(old))
    except ValueError:
        code_dir = str(repository)
    git["root"] = str(repository)
    return {"git": git, "code_dir": code_dir}


def import_run(registry: Registry, path: Path, *, cwd: Path | None = None) -> Imported:
    """Record the run of archive ``path`` in ``registry`` with a fresh run directory here."""
    path = Path(path)
    members = _read(path)
    manifest = _json(path, members, "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a maelstrom-run export (manifest format {manifest.get('format')!r})")
    if int(manifest.get("version", 0)) > VERSION:
        raise ConfigError(f"{path}: export format {manifest['version']} is newer than this maelstrom-run's")
    try:
        spec = RunSpec.from_dict(_json(path, members, "spec.json"))
    except TypeError:
        raise ConfigError(f"{path}: spec.json is not a run spec; export the run again") from None
    try:
        registry.get(spec.run_id)
    except ConfigError:
        pass
    else:
        raise ConfigError(f"run {spec.run_id} is already in the registry {registry.path}; nothing imported")
    changes: dict[str, Any] = {}
    repository = None
    commit = (spec.git or {}).get("commit")
    if commit:
        found = repository_with(commit, [Path((spec.git or {}).get("root") or "."), Path(cwd or Path.cwd())])
        if found is None:
            raise ConfigError(
                f"run {spec.run_id}: its commit {commit[:12]} is not in the repository here; "
                "run the import in a clone that has it (git fetch); nothing imported"
            )
        repository = str(found)
        if Path((spec.git or {}).get("root") or "") != found:
            changes.update(_relocate(spec, found))
    run_dir = paths.runs_dir() / spec.run_id
    spec = spec.derive(run_dir=str(run_dir), **changes)
    record = manifest.get("record") or {}
    state = record.get("state") or "unknown"
    from .monitor import TERMINAL

    if state not in TERMINAL:
        state = "unknown"  # the job ran elsewhere: nothing here can follow it
    spec.write(run_dir)
    for name in ("result.json", "stdout.log", "stderr.log"):
        if name in members:
            write_atomic(run_dir / name, members[name])
    job = record.get("job_id")
    registry.add_runs(
        [spec],
        state=state,
        message=f"imported from {path.name}" + (f" (job {job} on {record.get('backend')})" if job else ""),
    )
    registry.update(
        spec.run_id,
        **{
            k: record.get(k)
            for k in (
                "mlflow_run_id",
                "tracking_uri",
                "exit_code",
                "created",
                "submitted",
                "started",
                "ended",
            )
            if record.get(k) is not None
        },
    )
    return Imported(spec.run_id, run_dir, state, repository)
