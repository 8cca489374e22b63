"""MLflow wiring: tracking URI, reachability, flattened params, tags, parent runs, plots.

Imported by the worker and by the submitting side only when a run is actually
tracked; CLI start-up and config composition never import it.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config.secrets import resolve
from ..core import paths
from ..core.errors import ConfigError, JobError

#: MLflow's limits on a param's key and value.
MAX_KEY, MAX_VALUE = 250, 6000
_CREDENTIAL_ENV = {
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "token": "MLFLOW_TRACKING_TOKEN",
}


class TrackingError(JobError):
    """The tracking store cannot be reached or refused a request."""


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
    # store creation and migrations are MLflow's business, not the output of a run or a sweep
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri(tracking)
    check_credentials(tracking.get("credentials") or {})
    for name, value in (tracking.get("credentials") or {}).items():
        os.environ[_CREDENTIAL_ENV[name]] = resolve(value)
    timeout = float(tracking.get("timeout_s") or 10)
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout))))
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        check_reachable(uri, timeout)
    elif uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    import mlflow

    mlflow.set_tracking_uri(uri)
    return uri


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
        raise TrackingError(
            f"tracking server {uri} does not answer ({reason}); start it, or set tracking.uri / "
            "MLFLOW_TRACKING_URI to a server that runs"
        ) from None


def ensure_experiment(name: str, uri: str) -> str:
    """Experiment id by name, created (with artefacts beside the embedded store) if missing."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if uri == paths.default_tracking_uri():
        location = f"{paths.default_artifact_root()}/{name}"
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created concurrently by another job of the sweep
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def run_tags(spec: Any) -> dict[str, str]:
    tags = {
        "maelstrom.run_id": spec.run_id,
        "maelstrom.app": spec.app,
        "maelstrom.backend": spec.backend.get("name", ""),
        "maelstrom.config_hash": spec.config_hash,
        "mlflow.runName": spec.config.get("run_name") or spec.run_id,
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


def start_parent_run(spec: Any, size: int) -> tuple[str, str]:
    """Create the sweep's parent run (on the submitting side); returns (run id, tracking URI)."""
    import mlflow

    uri = connect(spec.tracking)
    experiment_id = ensure_experiment(experiment_name(spec), uri)
    client = mlflow.MlflowClient(uri)
    tags = {
        "maelstrom.sweep_id": spec.sweep_id,
        "maelstrom.app": spec.app,
        "maelstrom.backend": spec.backend.get("name", ""),
        "mlflow.runName": spec.sweep_id,
    }
    run = client.create_run(experiment_id, tags=tags)
    client.log_param(run.info.run_id, "sweep.size", size)
    return run.info.run_id, uri


def start_parent_run_async(spec: Any, size: int) -> Callable[[], tuple[str, str]]:
    """Create the parent run in a forked process while the sweep is composed (importing MLflow
    alone takes seconds); returns a function that waits for ``(run id, tracking URI)``."""
    import multiprocessing

    pool = multiprocessing.get_context("fork").Pool(1)
    pending = pool.apply_async(start_parent_run, (spec, size))

    def result() -> tuple[str, str]:
        try:
            return pending.get()
        finally:
            pool.close()
            pool.join()

    return result


def end_parent_run(parent_run_id: str, uri: str, states: dict[str, str], metrics: dict[str, dict]) -> None:
    """Close a sweep's parent run: FINISHED when every job succeeded, else FAILED; log a summary table."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    rows = [{"run_id": rid, "state": state, **metrics.get(rid, {})} for rid, state in states.items()]
    client.log_dict(parent_run_id, {"jobs": rows}, "sweep_summary.json")
    for state in ("succeeded", "failed", "cancelled"):
        client.log_metric(parent_run_id, f"jobs.{state}", sum(s == state for s in states.values()))
    ok = all(s == "succeeded" for s in states.values())
    client.set_terminated(parent_run_id, "FINISHED" if ok else "FAILED")


def reopen_parent_run(parent_run_id: str, uri: str) -> None:
    """Mark a closed sweep parent run RUNNING again (failed jobs are being re-run)."""
    import mlflow

    mlflow.MlflowClient(uri).update_run(parent_run_id, status="RUNNING")


def plot_history(history: dict[str, list[tuple[int, float]]]) -> Any:
    """Loss / accuracy curves per epoch (one panel per metric family)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    families: dict[str, list[str]] = {}
    for name in history:
        if name.startswith(("phase", "count.", "rate.")):
            continue
        base = name.removeprefix("val_")
        families.setdefault(base, []).append(name)
    fig, axes = plt.subplots(
        1, max(1, len(families)), figsize=(4.5 * max(1, len(families)), 3.4), squeeze=False
    )
    for ax, (family, names) in zip(axes[0], sorted(families.items()), strict=False):
        for name in sorted(names):
            steps, values = zip(*history[name], strict=True)
            ax.plot(steps, values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(family)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_phases(samples: dict[str, list[float]]) -> Any:
    """Distribution of per-step phase times (milliseconds, log scale) and each phase's share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(samples)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.boxplot([[s * 1e3 for s in samples[n]] for n in names], showfliers=True)
    left.set_xticks(range(1, len(names) + 1), names)
    left.set_yscale("log")
    left.set_ylabel("ms per call")
    left.set_title("phase time per call")
    totals = [sum(samples[n]) for n in names]
    right.barh(names, totals)
    right.set_xlabel("seconds in run")
    right.set_title("time per phase")
    fig.tight_layout()
    return fig


def plot_throughput(history: dict[str, list[tuple[int, float]]]) -> Any:
    """Data throughput per epoch (``rate.<counter>.GBps``: bytes read and delivered, GB = 1e9 bytes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for name in sorted(n for n in history if n.startswith("rate.") and n.endswith(".GBps")):
        steps, values = zip(*history[name], strict=True)
        ax.plot(steps, values, marker="o", label=name.removeprefix("rate.").removesuffix(".GBps"))
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("GB/s over the epoch")
    ax.set_ylim(bottom=0)
    ax.set_title("data throughput")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig
