"""RunSpec: the one object that crosses every boundary.

Built once from a composed config on the submitting side (:mod:`maelstrom_run.launch.spec`), written
as YAML into the run directory, read by the worker on the target. It is enough to re-run the job.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import secrets
import sys
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .rundir import SPEC as SPEC_FILE
from .rundir import write_atomic

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_PACKAGES = (
    "maelstrom-run",
    "hydra-core",
    "omegaconf",
    "numpy",
    "mlflow",
    "tensorflow",
    "tensorflow-cpu",
    "torch",
)


def new_id(prefix: str) -> str:
    """Sortable, short, unique: ``ap1-20261126-153012-3f9a1c``."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


#: Top-level keys that change how a run is shown or started, not what it computes: a dry run, its
#: name and tags, the schedule that fires it have the hash of the run itself.
NOT_HASHED = ("dry_run", "run_name", "tags", "schedule")


def config_hash(config: dict[str, Any]) -> str:
    """The identity of what a run computes (the resolved config without :data:`NOT_HASHED`)."""
    kept = {k: v for k, v in config.items() if k not in NOT_HASHED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@functools.cache
def _versions() -> tuple[tuple[str, str], ...]:
    out = {"python": sys.version.split()[0]}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return tuple(out.items())


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a run depends on (read once per process)."""
    return dict(_versions())


@dataclass
class RunSpec:
    run_id: str
    #: ``app`` runs a maelstrom-run application entry point; ``hydra`` runs a pickled
    #: Hydra task function (any Hydra app using the maelstrom launcher).
    kind: str
    app: str
    entry: str
    #: The resolved config; secret references stay references.
    config: dict[str, Any]
    overrides: list[str]
    run_dir: str
    config_hash: str
    #: Put on ``sys.path`` before importing the entry point (the user's code).
    code_dir: str | None = None
    git: dict[str, Any] | None = None
    packages: dict[str, str] = field(default_factory=dict)
    created: str = ""
    sweep_id: str | None = None
    sweep_index: int | None = None
    sweep_size: int | None = None
    #: MLflow run id of the sweep's parent run, where it existed when the job was submitted (else
    #: the job finds it by the sweep's id when it starts, or the sweep's close links it).
    parent_run_id: str | None = None
    #: The override keys whose values differ between the sweep's jobs (for run names).
    sweep_varying: list[str] | None = None
    rerun_of: str | None = None
    #: For ``kind: hydra``: the pickled task (relative to run_dir).
    payload: str | None = None
    #: The record this run's environment is compared with (a re-run's original, a frozen
    #: experiment's source run, a schedule's registration): ``{"source": str, "packages": {...}}``.
    env_reference: dict[str, Any] | None = None
    version: int = 1

    @property
    def backend(self) -> dict[str, Any]:
        return self.config.get("backend") or {}

    @property
    def tracking(self) -> dict[str, Any]:
        return self.config.get("tracking") or {}

    @property
    def labels(self) -> dict[str, Any]:
        return self.config.get("labels") or {}

    def _fields(self) -> dict[str, Any]:
        # a shallow view: every field is plain data already (no deep copy as ``asdict`` makes)
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_yaml(self) -> str:
        return yaml.dump(self._fields(), Dumper=_DUMPER, sort_keys=False, allow_unicode=True, width=120)

    def to_json(self) -> str:
        """The spec as one line of JSON (also valid YAML): what the registry stores."""
        return json.dumps(self._fields(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def parse(cls, text: str) -> RunSpec:
        """A spec from the registry's JSON or a ``spec.yaml``."""
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.load(text, Loader=_LOADER)
        return cls.from_dict(data)

    def write(self, directory: Path | None = None) -> Path:
        """``spec.yaml`` in the run directory, in YAML's JSON form (as readable, and written in a
        fraction of the time: a 1,000-job sweep writes 1,000 of them)."""
        path = Path(directory or self.run_dir) / SPEC_FILE
        # one field a line, each by the C encoder (``indent`` would switch to the pure-Python one)
        lines = (f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in self._fields().items())
        write_atomic(path, "{\n" + ",\n".join(lines) + "\n}\n")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: Path) -> RunSpec:
        path = Path(path)
        if path.is_dir():
            path = path / SPEC_FILE
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read run spec {path}: {exc.strerror}") from None
        return cls.parse(text)

    def derive(self, **changes: Any) -> RunSpec:
        """A copy with new identity fields (same config, so the same config hash)."""
        return dataclasses.replace(self, **changes)
