"""The entry point of command apps: ``app.entry: maelstrom_run.interop.command:main``.

Runs ``app.command`` (an MLproject entry point's command, say) with ``bash -c`` in the run's code
directory, its ``{name}`` placeholders filled from ``app.params`` and shell-quoted as ``mlflow run``
does (a ``path`` made absolute and checked, a ``uri`` checked). The output streams into the job's
output as it comes. The command logs into the run's own MLflow run: it gets ``MLFLOW_RUN_ID``,
``MLFLOW_EXPERIMENT_ID`` and ``MLFLOW_TRACKING_URI`` (rank 0 only), so ``mlflow.start_run()`` in
it continues that run, and ``MAELSTROM_RUN_ID`` and ``MAELSTROM_RUN_DIR`` (for checkpoints).
A non-zero exit status fails the run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any


class CommandFailed(RuntimeError):
    """The command exited with a non-zero status."""


def command_line(cfg: Any, cwd: Path) -> str:
    """The shell command a config runs (placeholders filled); ValueError names what is wrong."""
    from omegaconf import OmegaConf

    from .mlproject import format_command

    app = cfg.app
    command = app.get("command")
    if not command:
        raise ValueError(
            "app.command: not set; the shell command this entry runs, e.g. app.command='python train.py --lr {lr}'"
        )
    params, types = (app.get(key) for key in ("params", "param_types"))
    return format_command(
        str(command),
        OmegaConf.to_container(params, resolve=True) if params is not None else {},
        OmegaConf.to_container(types, resolve=True) if types is not None else {},
        cwd,
    )


def _environment(ctx: Any) -> dict[str, str]:
    env = dict(os.environ)
    env.update(MAELSTROM_RUN_ID=ctx.run_id, MAELSTROM_RUN_DIR=str(ctx.run_dir))
    if ctx.rank == 0 and "mlflow" in sys.modules:  # the worker tracks this run
        import mlflow

        run = mlflow.active_run()
        if run is not None:
            env.update(
                MLFLOW_RUN_ID=run.info.run_id,
                MLFLOW_EXPERIMENT_ID=run.info.experiment_id,
                MLFLOW_TRACKING_URI=mlflow.get_tracking_uri(),
            )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """End the command: SIGTERM, then SIGKILL when it is still there after a while."""
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def main(ctx: Any) -> dict[str, float]:
    cwd = Path.cwd()
    line = command_line(ctx.cfg, cwd)
    print(f"maelstrom-run: running in {cwd}: {line}", flush=True)
    sys.stderr.flush()
    # same process group as the worker: a cancel or Ctrl-C of the job reaches the command too
    proc = subprocess.Popen(["bash", "-c", line], cwd=cwd, env=_environment(ctx))
    try:
        status = proc.wait()
    except BaseException:  # cancelled, requeued or interrupted: the command goes too
        _stop(proc)
        raise
    if status != 0:
        how = f"was killed by signal {-status}" if status < 0 else f"exited with status {status}"
        raise CommandFailed(f"app.command {how}: {line}")
    return {}
