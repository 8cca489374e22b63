"""The registry at scale: listing 10,000 runs, refreshing a finished 300-job sweep, queueing 5,000 jobs.

    python benchmarks/registry.py [--runs 10000] [--sweep 300] [--held 5000] [--skip-held]

Needs the local Slurm (``sudo bash scripts/local-slurm.sh start``) for the last two figures.
``MAELSTROM_HOME`` is a temporary directory. One real run of a tiny app is recorded first; its row
(a real spec, about 5 KB) is copied to make the large registry.

- ``runs list --limit 0`` over ``--runs`` recorded runs (wall time of the command).
- ``runs status --sweep`` of a ``--sweep``-job sweep whose jobs (a real Slurm array, each task
  writing its ``result.json`` the way the worker does) have all ended while the registry still
  says running: one refresh asks Slurm, reads every result and records them.
- a ``--held``-job sweep of held jobs (``--hold``), from the command's start until ``squeue -r``
  shows every job; everything is cancelled afterwards.

Prints each figure now, its target and the figure measured before this work; exits 1 when a
target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from submit_overhead import _cancel_all, _timed, bench_project, held_sweep  # noqa: E402

BIN = Path(sys.executable).parent
#: (target seconds, seconds measured before, on this machine's local Slurm).
TARGETS = {"list": (1.0, 8.1), "status": (1.0, 4.6), "held": (8.0, 11.6)}


#: CPU seconds (user + system) of each figure's command: on a shared machine wall time also
#: counts the waits for a core, CPU time only the work.
CPU: dict[str, float] = {}


def _command_s(cmd: list[str], env: dict[str, str], repeat: int = 3, key: str = "") -> float:
    """Median wall time of a command (its output discarded); fails loudly when it fails."""
    times, cpu = [], []
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        times.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
        if proc.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    CPU[key] = statistics.median(cpu)
    return statistics.median(times)


def _clone_runs(db_path: Path, n: int) -> int:
    """Copy the one recorded run to ``n`` runs in all; returns bytes per run of the registry file."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    row = dict(db.execute("SELECT * FROM runs").fetchone())
    columns = list(row)
    rows = []
    for i in range(1, n):
        copy = dict(row, run_id=f"{row['run_id']}-{i:05d}", created=row["created"] - i)
        rows.append([copy[c] for c in columns])
    db.executemany(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    db.commit()
    db.execute("VACUUM")
    db.close()
    return db_path.stat().st_size // n


def _finished_sweep(db_path: Path, home: Path, n: int) -> str:
    """A sweep of ``n`` jobs recorded as running, whose array tasks have all ended (each wrote its
    result as the worker does: a temporary file, then a rename)."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    row = dict(db.execute("SELECT * FROM runs LIMIT 1").fetchone())
    spec = json.loads(row["spec"])
    spec["config"]["backend"] = {"name": "slurm", "kind": "slurm", "resources": {"time": "10m"}}
    sweep_id = "sweep-bench-registry"
    runs = home / "runs"
    map_file = home / "sweep-map.txt"
    dirs = [runs / f"{sweep_id}-{i}" for i in range(n)]
    for d in dirs:
        d.mkdir(parents=True)
    map_file.write_text("".join(f"{d}\n" for d in dirs))
    script = (
        f'd=$(sed -n "$((SLURM_ARRAY_TASK_ID + 1))p" {map_file}); '
        'printf \'{"state": "succeeded", "exit_code": 0, "run_id": "%s", "ended": %s}\' '
        '"$(basename $d)" "$(date +%s)" > "$d/.result.json.tmp" && mv "$d/.result.json.tmp" "$d/result.json"'
    )
    out = subprocess.run(
        ["sbatch", "--parsable", f"--array=0-{n - 1}", "-J", sweep_id, "-o", "/dev/null", f"--wrap={script}"],
        capture_output=True,
        text=True,
        check=True,
    )
    array = out.stdout.strip().split(";")[0]
    columns = list(row)
    rows = []
    for i, d in enumerate(dirs):
        spec_i = dict(spec, run_id=d.name, sweep_id=sweep_id, sweep_index=i, run_dir=str(d))
        copy = dict(
            row,
            run_id=d.name,
            sweep_id=sweep_id,
            sweep_index=i,
            job_id=f"{array}_{i}",
            state="running",
            run_dir=str(d),
            backend="slurm",
            backend_kind="slurm",
            mlflow_run_id=None,
            spec=json.dumps(spec_i),
        )
        rows.append([copy[c] for c in columns])
    db.executemany(f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    db.execute(
        "INSERT INTO sweeps (sweep_id, app, size, backend, overrides, created) VALUES (?, ?, ?, ?, ?, ?)",
        (sweep_id, row["app"], n, "slurm", "[]", time.time()),
    )
    db.commit()
    db.close()
    deadline = time.monotonic() + 600
    while sum((d / "result.json").exists() for d in dirs) < n:
        if time.monotonic() > deadline:
            sys.exit("the array tasks did not all end within 10 minutes")
        time.sleep(0.5)
    while True:  # and Slurm's accounting knows they ended
        states = subprocess.run(
            ["sacct", "-X", "-n", "-P", "-j", array, "-o", "State"], capture_output=True, text=True
        ).stdout.split()
        if states and all(s == "COMPLETED" for s in states):
            break
        time.sleep(0.5)
    return sweep_id


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--sweep", type=int, default=300)
    parser.add_argument("--held", type=int, default=5000)
    parser.add_argument("--skip-held", action="store_true", help="leave out the held-sweep figure")
    args = parser.parse_args()
    slurm = shutil.which("sbatch") is not None
    console = Console()
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="mr-registry-bench-") as tmp:
        root = Path(tmp)
        project = bench_project(root)
        home = root / "home"
        env = {
            **os.environ,
            "MAELSTROM_HOME": str(home),
            "MAELSTROM_CONFIG_PATH": str(project / "conf"),
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        console.print("one real run to copy ...")
        subprocess.run(
            [str(BIN / "maelstrom-run"), "app=bench"], cwd=project, env=env, check=True, capture_output=True
        )
        registry = home / "registry.db"
        per_run = _clone_runs(registry, args.runs)
        console.print(f"{args.runs} runs recorded ({per_run / 1000:.1f} KB per run); runs list --limit 0 ...")
        figures["list"] = _command_s(
            [str(BIN / "maelstrom"), "runs", "list", "--limit", "0"], env, key="list"
        )
        if slurm:
            console.print(f"a finished {args.sweep}-job sweep; runs status --sweep ...")
            sweep_id = _finished_sweep(registry, home, args.sweep)
            status = [str(BIN / "maelstrom"), "runs", "status", "--sweep", sweep_id]
            # the first refresh records them all; the next has nothing left to do
            figures["status"] = _command_s(status, env, repeat=1, key="status")
            figures["status (again)"] = _command_s(status, env, key="status (again)")
            if not args.skip_held:
                console.print(f"a {args.held}-job held sweep until squeue -r shows every job ...")
                rates = ",".join(f"{0.00001 * (i + 1):.5f}" for i in range(args.held))
                held = held_sweep(rates)
                try:
                    figures["held"] = _timed(held, project, env, args.held, "sweep-bench-")
                finally:
                    _cancel_all("sweep-bench-")
    table = Table(title="registry at scale (wall time of the command)")
    for column in ("", "now s", "CPU s", "target s", "before s", "now vs target"):
        table.add_column(column, justify="right" if column else "left")
    labels = {
        "list": f"runs list --limit 0, {args.runs} runs",
        "status": f"runs status --sweep, finished {args.sweep}-job sweep (first refresh)",
        "status (again)": "the same, nothing left to refresh",
        "held": f"{args.held}-job held sweep queued",
    }
    missed = False
    for key, seconds in figures.items():
        target, before = TARGETS.get(key.split()[0], (None, None))
        if key != key.split()[0]:
            target, before = TARGETS[key.split()[0]][0], None
        ok = target is None or seconds <= target
        missed |= not ok
        table.add_row(
            labels[key],
            f"{seconds:.2f}",
            f"{CPU[key]:.2f}" if key in CPU else "",
            f"{target:.1f}" if target else "",
            f"{before:.1f}" if before else "",
            f"{seconds / target:.2f}x" + ("" if ok else " [red]missed[/]") if target else "",
        )
    console.print(table)
    console.print(f"registry size: about {per_run / 1000:.1f} KB per run; see README, 'Pruning the registry'")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
