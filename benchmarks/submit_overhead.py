"""Submission overhead of a large sweep on Slurm: maelstrom-run against hydra-submitit-launcher.

    python benchmarks/submit_overhead.py [--jobs 1000] [--runs 1]

Needs a Slurm cluster (``sudo bash scripts/local-slurm.sh start`` gives a local one) and the
``bench`` extra (``pip install -e '.[bench]'``: hydra-submitit-launcher). Both sides submit the
same sweep, ``model.learning_rate`` over ``--jobs`` values, with every job held (``--hold``) so
that nothing runs, and everything is cancelled afterwards. The figure is the wall time from the
command's start until all jobs are in the queue (counted with ``squeue -r``).

- maelstrom-run: ``maelstrom-run -m app=bench backend=slurm model.learning_rate=...`` in a small
  git project (the code is staged, the sweep is one MLflow parent run with a child per job, in
  an embedded MLflow store created beforehand).
- baseline: a minimal Hydra app with ``hydra/launcher=submitit_slurm`` and the same sweep.

Targets: maelstrom-run <= 5 s for 1,000 jobs and >= 10x faster than the baseline; exits 1 when
one is missed. ``MAELSTROM_HOME`` is a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

TARGET_S = 5.0
TARGET_RATIO = 10.0
BIN = Path(sys.executable).parent

APP = """\
def main(ctx):
    return {"loss": float(ctx.cfg.model.learning_rate)}
"""

APP_CONF = """\
# @package _global_
defaults:
  - /dataset: ap1
  - /loader: ap1
  - /model: ap1_unet
  - /labels: ap1
  - _self_
app:
  name: bench
  entry: benchapp:main
"""

HYDRA_APP = """\
import hydra


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    return cfg.model.learning_rate


if __name__ == "__main__":
    main()
"""

HYDRA_CONF = """\
defaults:
  - override hydra/launcher: submitit_slurm
  - _self_
model:
  learning_rate: 0.001
hydra:
  launcher:
    timeout_min: 10
    additional_parameters:
      hold: true
"""


def bench_project(root: Path) -> Path:
    """A committed git project under ``root`` with the tiny ``bench`` app."""
    project = root / "project"
    (project / "conf" / "app").mkdir(parents=True)
    (project / "benchapp.py").write_text(APP)
    (project / "conf" / "app" / "bench.yaml").write_text(APP_CONF)
    identity = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", *identity, "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", *identity, "commit", "-qm", "bench"], cwd=project, check=True)
    return project


def held_sweep(rates: str) -> list[str]:
    """The maelstrom-run command of the benchmark's sweep (every job held, so none runs)."""
    return [
        str(BIN / "maelstrom-run"),
        "-m",
        "app=bench",
        "backend=slurm",
        "backend.sbatch_options=[--hold]",
        f"model.learning_rate={rates}",
    ]


def _queued(name_prefix: str) -> int:
    out = subprocess.run(
        ["squeue", "-h", "-r", "-o", "%j"], capture_output=True, text=True, check=True
    ).stdout
    return sum(1 for line in out.splitlines() if line.startswith(name_prefix))


def _cancel_all(name_prefix: str) -> None:
    out = subprocess.run(["squeue", "-h", "-o", "%A|%j"], capture_output=True, text=True, check=True).stdout
    ids = sorted(
        {line.split("|")[0] for line in out.splitlines() if line.split("|")[-1].startswith(name_prefix)}
    )
    if ids:
        subprocess.run(["scancel", *ids], check=False)
    deadline = time.monotonic() + 60
    while _queued(name_prefix) and time.monotonic() < deadline:
        time.sleep(0.5)


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], jobs: int, name_prefix: str) -> float:
    """Seconds from the command's start until ``jobs`` jobs named ``name_prefix*`` are queued.

    The command may go on after that (hydra-submitit-launcher waits for its jobs to end: held
    jobs never do); it is stopped once the jobs are queued.
    """
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
        while _queued(name_prefix) < jobs:
            if proc.poll() is not None and proc.returncode != 0:
                log.seek(0)
                sys.exit(f"{cmd[0]} failed (exit {proc.returncode}):\n{log.read()[-3000:]}")
            if time.perf_counter() - start > 1800:
                proc.kill()
                sys.exit(f"only {_queued(name_prefix)} of {jobs} jobs reached the queue in 30 min")
            time.sleep(0.05)
        elapsed = time.perf_counter() - start
        if proc.poll() is None:
            proc.terminate()
        proc.wait()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=1, help="measurements of each side (median)")
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        sys.exit("sbatch is not on PATH: start a local cluster with `sudo bash scripts/local-slurm.sh start`")
    try:
        import hydra_plugins.hydra_submitit_launcher  # noqa: F401
    except ImportError:
        sys.exit("the baseline needs hydra-submitit-launcher: pip install -e '.[bench]'")

    console = Console()
    rates = ",".join(f"{0.0001 * (i + 1):.4f}" for i in range(args.jobs))
    with tempfile.TemporaryDirectory(prefix="mr-submit-bench-") as tmp:
        root = Path(tmp)
        project = bench_project(root)
        baseline_dir = root / "baseline"
        baseline_dir.mkdir()
        (baseline_dir / "my_app.py").write_text(HYDRA_APP)
        (baseline_dir / "config.yaml").write_text(HYDRA_CONF)

        env = {
            **os.environ,
            "MAELSTROM_HOME": str(root / "home"),
            "MAELSTROM_CONFIG_PATH": str(project / "conf"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        ours_cmd = held_sweep(rates)
        # one small sweep first: creates the MLflow store and warms the page cache
        warm = [*ours_cmd[:-1], "model.learning_rate=0.1"]
        _timed(warm, project, env, 1, "sweep-bench-")
        _cancel_all("sweep-bench-")
        baseline_cmd = [
            sys.executable,
            "my_app.py",
            "-m",
            "hydra.launcher.partition=debug",
            f"hydra.sweep.dir={root / 'multirun'}",
            f"model.learning_rate={rates}",
        ]
        ours, theirs = [], []
        for run in range(args.runs):
            console.print(f"[bold]run {run + 1}/{args.runs}[/]: maelstrom-run, {args.jobs} jobs ...")
            ours.append(_timed(ours_cmd, project, env, args.jobs, "sweep-bench-"))
            _cancel_all("sweep-bench-")
            console.print(f"  {ours[-1]:.2f} s; hydra-submitit-launcher, {args.jobs} jobs ...")
            theirs.append(_timed(baseline_cmd, baseline_dir, env, args.jobs, "my_app"))
            _cancel_all("my_app")
            console.print(f"  {theirs[-1]:.2f} s")

    ours_s, theirs_s = statistics.median(ours), statistics.median(theirs)
    ratio = theirs_s / ours_s
    table = Table(title=f"{args.jobs}-job sweep on Slurm, wall time until every job is queued")
    for column in ("", "seconds", "jobs/s", "ratio", "target"):
        table.add_column(column, justify="right" if column else "left")
    table.add_row(
        "hydra-submitit-launcher (baseline)", f"{theirs_s:.2f}", f"{args.jobs / theirs_s:.0f}", "1.00x", ""
    )
    table.add_row(
        "maelstrom-run",
        f"{ours_s:.2f}",
        f"{args.jobs / ours_s:.0f}",
        f"{ratio:.1f}x faster",
        f"<= {TARGET_S:.0f} s, >= {TARGET_RATIO:.0f}x",
    )
    console.print(table)
    ok = ours_s <= TARGET_S * args.jobs / 1000 and ratio >= TARGET_RATIO
    console.print("[green]targets met[/]" if ok else "[red]target missed[/]")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
