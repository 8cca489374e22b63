"""MLflow wiring: tracking URI, reachability, a run's params, name and tags, the phase table, dataset
inputs, plots, and a sweep's parent run with its summary page.

Imported by the worker and by the submitting side only when a run is actually
tracked; CLI start-up and config composition never import it.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config.secrets import resolve
from ..core import paths
from ..core.errors import ConfigError, JobError

#: The tag that marks a sweep's parent run (beside ``maelstrom.sweep_id``, which its children carry too).
SWEEP_PARENT_TAG = "maelstrom.sweep.parent"
#: How much later than its sweep's parent run a job's run may say it started (its node's clock) and
#: still be looked at when the sweep's orphaned runs are linked to the parent.
_CLOCK_MARGIN_MS = 10 * 60 * 1000
#: MLflow's limits on a param's key and value.
MAX_KEY, MAX_VALUE = 250, 6000
#: MLflow 3's UI opens experiments of this kind as classic ML experiments (runs, metrics, artefacts),
#: not in its GenAI view (traces, prompts).
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
#: Config keys that say how the run was started, not what it trains (or are tags already).
_NOT_PARAMS = ("dry_run", "run_name", "tags", "labels")
#: Per-epoch phase statistics that go into the phase table (``timing/phases.csv``), not the metrics.
_PHASE_STATS = ("count", "p50_ms", "p90_ms", "p99_ms", "share")
PHASE_TABLE = "timing/phases.csv"
_CREDENTIAL_ENV = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}


class TrackingError(JobError):
    """The tracking store cannot be reached or refused a request."""


class TrackingUnreachable(TrackingError):
    """The tracking server does not answer (a job goes on and keeps its calls in its run directory)."""


def tracking_uri(tracking: dict[str, Any]) -> str:
    return tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or paths.default_tracking_uri()


def experiment_name(spec: Any) -> str:
    return spec.tracking.get("experiment") or spec.app


def flatten(config: Any, prefix: str = "") -> dict[str, str]:
    """Dotted keys and string values within MLflow's limits (long values are cut, marked ``...``)."""
    out: dict[str, str] = {}
    if isinstance(config, dict):
        if not config and prefix:
            out[prefix] = "{}"
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    text = json.dumps(config) if isinstance(config, list) else "null" if config is None else str(config)
    key = (
        prefix
        if len(prefix) <= MAX_KEY
        else prefix[: MAX_KEY - 12] + "~" + f"{hash(prefix) & 0xFFFFFFFF:08x}"
    )
    out[key] = text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 3] + "..."
    return out


def check_credentials(credentials: dict[str, Any], key: str = "tracking.credentials") -> None:
    """The config check of ``tracking.credentials`` (named in its schema): known names only."""
    for name in credentials:
        if name not in _CREDENTIAL_ENV:
            raise ConfigError(f"{key}.{name}: unknown; use {', '.join(_CREDENTIAL_ENV)}")


def connect(tracking: dict[str, Any]) -> str:
    """Point MLflow at the configured store, with credentials resolved in memory; returns the URI."""
    uri = tracking_uri(tracking)
    check_credentials(tracking.get("credentials") or {})
    for name, value in (tracking.get("credentials") or {}).items():
        os.environ[_CREDENTIAL_ENV[name]] = resolve(value)
    timeout = float(tracking.get("timeout_s") or 10)
    if uri.startswith(("http://", "https://")):
        _quiet_urls()
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        check_reachable(uri, timeout)
    import mlflow

    # store creation and migrations are MLflow's business, not the output of a sweep (set after the
    # import, which configures MLflow's loggers); MLFLOW_LOGGING_LEVEL, when set, decides instead
    if "MLFLOW_LOGGING_LEVEL" not in os.environ:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
    if uri.startswith("sqlite:///"):
        _create_store(uri, Path(uri.removeprefix("sqlite:///")))
    mlflow.set_tracking_uri(uri)
    return uri


def _create_store(uri: str, db: Path) -> None:
    """Create (and migrate) an embedded sqlite store once, under a file lock: jobs that start together
    on a new store would otherwise create its tables at the same time, and all but one fail
    (``duplicate column name``)."""
    import fcntl

    import mlflow

    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mlflow.MlflowClient(uri).search_experiments(max_results=1)


def _quiet_urls() -> None:
    """Keep MLflow's own "View run ... at" lines out of a run's output (the summary names the run)."""
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def check_reachable(uri: str, timeout: float) -> None:
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise TrackingError(
                f"tracking server {uri} refused the credentials (HTTP {exc.code}); check tracking.credentials"
            ) from None
        if exc.code != 404:  # servers behind proxies may lack /health; the API call will tell
            raise TrackingError(f"tracking server {uri} answered HTTP {exc.code} on {url}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingUnreachable(
            f"tracking server {uri} does not answer ({reason}); start it, or set tracking.uri / "
            "MLFLOW_TRACKING_URI to a server that runs"
        ) from None


def ensure_experiment(name: str, uri: str) -> str:
    """Experiment id by name, created (with artefacts beside the embedded store) if missing."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        for key, value in EXPERIMENT_KIND.items():
            if experiment.tags.get(key) is None:  # created before maelstrom-run tagged its experiments
                client.set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id
    location = None
    if uri == paths.default_tracking_uri():
        location = f"{paths.default_artifact_root()}/{name}"
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:  # created concurrently by another job of the sweep
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def run_params(config: dict[str, Any]) -> dict[str, str]:
    """The params of a run: its resolved config, flattened, without what says nothing about this run
    (null and empty values, the sizes of the dataset tiers it does not train on, keys that are tags or
    say how it was started)."""
    tier = (config.get("train") or {}).get("tier")
    kept = {k: v for k, v in config.items() if k not in _NOT_PARAMS}
    dataset = dict(kept.get("dataset") or {})
    if dataset:
        if isinstance(dataset.get("tiers"), dict):
            dataset["tiers"] = {k: v for k, v in dataset["tiers"].items() if k == tier}
        remote = dataset.get("remote")
        if isinstance(remote, dict) and isinstance(remote.get("tiers"), dict):
            dataset["remote"] = {**remote, "tiers": {k: v for k, v in remote["tiers"].items() if k == tier}}
        kept["dataset"] = dataset
    schedule = kept.get("schedule")
    if isinstance(schedule, dict) and schedule.get("name") in (None, "none"):
        del kept["schedule"]  # a run on no schedule: the schedule group's defaults say nothing of it
    return flatten(_pruned(kept))


def _pruned(value: Any) -> Any:
    """``value`` without null values and empty lists or mappings, at any depth."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    return value


def override_key(override: str) -> str:
    """The config key an override sets (``+model.x=1`` -> ``model.x``)."""
    return override.split("=", 1)[0].lstrip("+~")


def varying(job_overrides: Iterable[Iterable[str]]) -> dict[str, list[str]]:
    """The overrides whose values differ between a sweep's jobs: ``{key: [value of each distinct]}``."""
    values: dict[str, dict[str, None]] = {}
    counts: dict[str, int] = {}
    jobs = 0
    for overrides in job_overrides:
        jobs += 1
        keys = set()
        for override in overrides:
            key, value = override_key(override), override.partition("=")[2]
            values.setdefault(key, {})[value] = None
            keys.add(key)
        for key in keys:
            counts[key] = counts.get(key, 0) + 1
    # a key set by only some jobs varies too (the others have the config's value)
    return {k: list(v) for k, v in values.items() if len(v) > 1 or counts[k] < jobs}


def run_name(spec: Any, varying_keys: Iterable[str] | None = None) -> str:
    """``run_name`` from the config, else the app and the overrides that vary in its sweep (for a
    single run: the user's overrides, without the app's own selection), else the app and the id's
    last part (``ap2 e783fe``)."""
    if spec.config.get("run_name"):
        return str(spec.config["run_name"])
    keys = set(varying_keys or ())
    shown = [
        o
        for o in spec.overrides
        if (override_key(o) in keys if spec.sweep_id else override_key(o) not in ("app", "dry_run"))
    ]
    name = " ".join([spec.app, *shown]) if shown else f"{spec.app} {spec.run_id.rsplit('-', 1)[-1]}"
    return name if len(name) <= 120 else name[:117] + "..."


def sweep_varying_keys(parent_run_id: str | None, uri: str | None = None) -> list[str]:
    """The keys a sweep varies, as its parent run recorded them (for its children's names); none
    where the parent cannot be read (a run name is never a reason to fail a run)."""
    if not parent_run_id:
        return []
    import mlflow

    try:
        tag = mlflow.MlflowClient(uri).get_run(parent_run_id).data.tags.get("maelstrom.sweep.varying")
    except Exception:  # noqa: BLE001 - the server away: the name without the swept values
        return []
    return list(json.loads(tag)) if tag else []


class EpochLog:
    """What the worker keeps of a run's metrics besides sending them: the history of each metric (for
    the plots) and the phase statistics, which go into one table artefact rather than 30 metrics
    per epoch (``phase.<name>.total_s`` stays a metric: it is what runs are compared by)."""

    def __init__(self) -> None:
        self.history: dict[str, list[tuple[int, float]]] = {}
        self.phase_rows: list[dict[str, Any]] = []

    def add(self, metrics: dict[str, float], step: int | None) -> dict[str, float]:
        """Record ``metrics`` of ``step``; returns those that go to MLflow as metrics."""
        logged: dict[str, float] = {}
        stats: dict[str, dict[str, Any]] = {}
        for name, value in metrics.items():
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "phase":
                stats.setdefault(parts[1], {})[_column(parts[2])] = value
                if parts[2] in _PHASE_STATS:
                    continue
            logged[name] = value
            points = self.history.setdefault(name, [])
            points.append((step if step is not None else len(points), value))
        for phase, values in stats.items():
            self.phase_rows.append({"epoch": step if step is not None else "", "phase": phase, **values})
        return logged

    def summary_rows(self, run_summary: dict[str, float]) -> list[dict[str, Any]]:
        """The phase table's rows of the whole run (``epoch: all``) from the timer's run summary."""
        stats: dict[str, dict[str, Any]] = {}
        for name, value in run_summary.items():
            _, phase, stat = name.split(".")
            stats.setdefault(phase, {})[_column(stat)] = value
        return [{"epoch": "all", "phase": phase, **values} for phase, values in stats.items()]

    def phase_table(self, run_summary: dict[str, float]) -> str:
        """The phase table as CSV: a row per epoch and phase, then the run's: calls, seconds, share of
        the timed time, median and tail per call."""
        import csv
        import io

        columns = ("epoch", "phase", "calls", "total_s", "share", "p50_ms", "p90_ms", "p99_ms")
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in [*self.phase_rows, *self.summary_rows(run_summary)]:
            epoch = row["epoch"] + 1 if isinstance(row["epoch"], int) and self._from_zero() else row["epoch"]
            values = {**row, "epoch": epoch, "calls": int(row.get("calls", 0))}
            writer.writerow([_cell(values.get(c, "")) for c in columns])
        return out.getvalue()

    def _from_zero(self) -> bool:
        epochs = [r["epoch"] for r in self.phase_rows if isinstance(r["epoch"], int)]
        return bool(epochs) and min(epochs) == 0


def _column(stat: str) -> str:
    return "calls" if stat == "count" else stat


def _cell(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def run_totals(run_summary: dict[str, float]) -> dict[str, float]:
    """The metrics kept of the timer's run summary: seconds per phase (the rest is in the table)."""
    return {k: v for k, v in run_summary.items() if k.endswith(".total_s")}


def streams_data(config: dict[str, Any]) -> bool:
    """Whether the run's loader reads while it trains (prefetched fields, memory-mapped arrays), so
    that its bytes per second say something; the others read their files into memory once."""
    loader = config.get("loader") or {}
    return loader.get("kind") == "gridded" and bool(loader.get("prefetch") or loader.get("preprocessed"))


def dataset_input(found: Any) -> Any:
    """A dataset the run loaded (a :class:`~maelstrom_run.data.datasets.Dataset`) as an MLflow input:
    where its files come from (the remote URL, else their directory) and a digest of their names
    and sizes."""
    import hashlib

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    files = sorted(Path(f) for f in found.files)
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{path.stat().st_size if path.exists() else -1}\0".encode())
    remote = ((found.config or {}).get("remote") or {}).get("url")
    if found.source == "remote" and remote:
        where = str(remote)
    else:
        root = Path(os.path.commonpath([str(f) for f in files])) if files else Path(".")
        where = str(root if root.is_dir() else root.parent)
    with warnings.catch_warnings():  # MLflow registers its local-file source twice and says so
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(where)  # an HTTP URL or a local directory
    name = f"{found.name} ({found.source}, {found.tier})"
    return MetaDataset(source=source, name=name, digest=digest.hexdigest()[:16])


def run_tags(spec: Any) -> dict[str, str]:
    tags = {
        "maelstrom.run_id": spec.run_id,
        "maelstrom.app": spec.app,
        "maelstrom.backend": spec.backend.get("name", ""),
        "maelstrom.config_hash": spec.config_hash,
    }
    if spec.git and spec.git.get("commit"):
        tags["mlflow.source.git.commit"] = spec.git["commit"]
        tags["maelstrom.git.dirty"] = str(bool(spec.git.get("dirty"))).lower()
    if spec.sweep_id:
        tags["maelstrom.sweep_id"] = spec.sweep_id
        tags["maelstrom.sweep_index"] = str(spec.sweep_index)
    if spec.parent_run_id:
        tags["mlflow.parentRunId"] = spec.parent_run_id
    if spec.rerun_of:
        tags["maelstrom.rerun_of"] = spec.rerun_of
    from ..config.taxonomy import tags as label_tags

    tags.update(label_tags(spec.labels))
    tags.update({str(k): str(v) for k, v in (spec.config.get("tags") or {}).items()})
    return tags


def start_parent_run(
    spec: Any,
    size: int,
    swept: dict[str, list[str]] | None = None,
    then: Callable[[str, str], None] | None = None,
) -> tuple[str, str]:
    """Create the sweep's parent run (on the submitting side), with what the sweep varies as params
    (``sweep.<key>``: its values); ``then(run id, URI)`` records it. Returns (run id, tracking URI)."""
    import mlflow

    swept = swept or {}
    uri = connect(spec.tracking)
    experiment_id = ensure_experiment(experiment_name(spec), uri)
    client = mlflow.MlflowClient(uri)
    name = f"{spec.app} sweep: {', '.join(swept)}" if swept else f"{spec.app} sweep {spec.sweep_id[-6:]}"
    tags = {
        "maelstrom.sweep_id": spec.sweep_id,
        SWEEP_PARENT_TAG: "true",
        "maelstrom.app": spec.app,
        "maelstrom.backend": spec.backend.get("name", ""),
        "maelstrom.sweep.varying": json.dumps(list(swept)),
        "mlflow.runName": name,
    }
    run = client.create_run(experiment_id, tags=tags, run_name=name)
    params = {"sweep.size": str(size)}
    params.update(flatten({"sweep": {k: ", ".join(v) for k, v in swept.items()}}))
    client.log_batch(run.info.run_id, params=[mlflow.entities.Param(k, v) for k, v in params.items()])
    if then is not None:
        then(run.info.run_id, uri)
    return run.info.run_id, uri


def start_parent_run_async(
    spec: Any,
    size: int,
    swept: dict[str, list[str]] | None = None,
    then: Callable[[str, str], None] | None = None,
) -> Callable[[], tuple[str, str]]:
    """Create (and with ``then``, a picklable function, record) the parent run in a forked process
    while the sweep is composed and submitted (importing MLflow alone takes seconds); returns a
    function that waits for ``(run id, tracking URI)``. A submitter killed meanwhile leaves the
    process to finish and record it."""
    import multiprocessing

    pool = multiprocessing.get_context("fork").Pool(1)
    pending = pool.apply_async(start_parent_run, (spec, size, swept, then))

    def result() -> tuple[str, str]:
        try:
            return pending.get()
        finally:
            pool.close()
            pool.join()

    return result


def late_parent_run(spec: Any, size: int, swept: dict[str, list[str]]) -> tuple[str, str] | None:
    """The parent run of ``spec``'s sweep where it was not recorded (the server was away, or the
    submitter was killed before recording it): found by its tags, else made now; None while the
    server is still away. Returns (run id, tracking URI)."""
    import mlflow

    try:
        uri = connect(spec.tracking)
    except TrackingUnreachable:
        return None
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(experiment_name(spec))
    found = experiment and find_sweep_parent(client, spec.sweep_id, [experiment.experiment_id])
    return (found, uri) if found else start_parent_run(spec, size, swept)


def find_sweep_parent(client: Any, sweep_id: str, experiment_ids: list[str]) -> str | None:
    """The MLflow run id of a sweep's parent run in these experiments, found by its tags; None where
    there is none yet."""
    runs = client.search_runs(
        experiment_ids,
        filter_string=f"tags.`maelstrom.sweep_id` = '{sweep_id}' AND tags.`{SWEEP_PARENT_TAG}` = 'true'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def link_children(parent_run_id: str, uri: str, sweep_id: str) -> int:
    """Make the sweep's MLflow runs that were created before ``parent_run_id`` existed (and so have
    no parent) its children; returns how many were linked. A job's run made later found the parent
    itself; the margin allows for the clock of the node it ran on."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    parent = client.get_run(parent_run_id).info
    before = int(parent.start_time) + _CLOCK_MARGIN_MS
    linked, token = 0, None
    while True:
        page = client.search_runs(
            [parent.experiment_id],
            filter_string=f"tags.`maelstrom.sweep_id` = '{sweep_id}' AND attributes.start_time < {before}",
            max_results=1000,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if not tags.get("mlflow.parentRunId") and not tags.get(SWEEP_PARENT_TAG):
                client.set_tag(run.info.run_id, "mlflow.parentRunId", parent_run_id)
                linked += 1
        token = page.token
        if not token:
            return linked


def end_parent_run(
    parent_run_id: str, uri: str, states: dict[str, str], metrics: dict[str, dict], page: Any = None
) -> None:
    """Close a sweep's parent run: FINISHED when every job succeeded, KILLED when the others were
    cancelled, else FAILED. Logged on it: the
    jobs' states and metrics (``sweep_summary.json``); with ``page`` (a
    :class:`~maelstrom_run.tracking.sweep_page.SweepPage`) also the best job and its metric, the
    summary table (``sweep_summary.csv``), the sweep's plots and the summary page
    (``sweep_summary.html``)."""
    import mlflow

    _quiet_urls()
    client = mlflow.MlflowClient(uri)
    rows = [{"run_id": rid, "state": state, **metrics.get(rid, {})} for rid, state in states.items()]
    client.log_dict(parent_run_id, {"jobs": rows}, "sweep_summary.json")
    for state in ("succeeded", "failed", "cancelled"):
        client.log_metric(parent_run_id, f"jobs.{state}", sum(s == state for s in states.values()))
    if page is not None:
        log_sweep_page(client, parent_run_id, page)
    # cancelled children (and no failed one) make the parent KILLED, as they are
    ended = set(states.values()) - {"succeeded"}
    status = "FINISHED" if not ended else "KILLED" if ended == {"cancelled"} else "FAILED"
    client.set_terminated(parent_run_id, status)


def fill_sweep_page(client: Any, page: Any) -> None:
    """Complete a sweep page from MLflow: the experiment (for links) and each job's main metric per
    epoch (for the curves plot)."""
    if page.parent_run_id and not page.experiment_id:
        page.experiment_id = client.get_run(page.parent_run_id).info.experiment_id
    name, _ = page.main
    if not name or len(page.jobs) > 50:  # one request per job; a large sweep's page shows the bars
        return
    for job in page.jobs:
        if job.mlflow_run_id:
            history = client.get_metric_history(job.mlflow_run_id, name)
            page.curves[job.mlflow_run_id] = sorted((m.step, m.value) for m in history)


def log_sweep_page(client: Any, parent_run_id: str, page: Any) -> None:
    from . import sweep_page

    page.parent_run_id = parent_run_id
    fill_sweep_page(client, page)
    name, _ = page.main
    best = page.best()
    if best is not None and name:
        client.log_metric(parent_run_id, f"best.{name}", best.metrics[name])
        for key, value in {
            "maelstrom.sweep.best_run": best.run_id,
            "maelstrom.sweep.best_mlflow_run": best.mlflow_run_id or "",
            "maelstrom.sweep.best_metric": name,
            "maelstrom.sweep.best_overrides": page.label(best),
        }.items():
            client.set_tag(parent_run_id, key, value)
    client.log_text(parent_run_id, sweep_page.summary_csv(page), "sweep_summary.csv")
    images = sweep_page.plots(page)
    for file_name, data in images.items():
        _log_bytes(client, parent_run_id, data, f"plots/{file_name}")
    client.log_text(parent_run_id, sweep_page.render(page, images), "sweep_summary.html")


def _log_bytes(client: Any, run_id: str, data: bytes, artifact_file: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(artifact_file).name
        path.write_bytes(data)
        client.log_artifact(run_id, str(path), str(Path(artifact_file).parent))


def kill_parent_run(parent_run_id: str, uri: str) -> None:
    """Close the parent run of a sweep whose submission died before any job was recorded."""
    import mlflow

    mlflow.MlflowClient(uri).set_terminated(parent_run_id, "KILLED")


def reopen_parent_run(parent_run_id: str, uri: str) -> None:
    """Mark a closed sweep parent run RUNNING again (failed jobs are being re-run)."""
    import mlflow

    mlflow.MlflowClient(uri).update_run(parent_run_id, status="RUNNING")
