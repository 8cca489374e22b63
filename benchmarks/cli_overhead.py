"""Start-up overhead of ``maelstrom-run`` against a minimal plain-Hydra app.

    python benchmarks/cli_overhead.py [--runs 7] [--cwd DIR]

Each measurement is the wall time of a fresh subprocess (one warm-up run, then the median of
``--runs`` runs). Measured in the same run, so the ratios compare like with like:

- (a) ``maelstrom-run --help``                       vs (c) ``--help`` of a plain Hydra app
- (b) ``maelstrom-run app=ap1 dry_run=true``         vs (d) the plain app composing and printing its config
  (compose, validate, build the RunSpec, capture git, render the job; nothing is submitted)

Targets: (a) <= 0.5 s, (b) <= 1 s and (b) <= 1.3x (d); exits 1 when one is missed. It also checks, in a fresh
subprocess, that neither maelstrom-run path imports tensorflow, torch or mlflow.
``MAELSTROM_HOME`` points to a temporary directory, so ``~/.maelstrom`` is never touched.
"""

from __future__ import annotations

import argparse
import json
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

HELP_TARGET_S = 0.5
COMPOSE_TARGET_S = 1.0
#: The dry run against the plain Hydra app composing and printing its config, in the same run.
COMPOSE_TARGET_RATIO = 1.3
HEAVY = ("tensorflow", "torch", "mlflow")

PLAIN_APP = """\
import hydra
from omegaconf import OmegaConf


@hydra.main(config_path=".", config_name="config", version_base="1.3")
def main(cfg):
    print(OmegaConf.to_yaml(cfg))


if __name__ == "__main__":
    main()
"""

PLAIN_CONFIG = """\
model:
  name: plain
  learning_rate: 0.001
train:
  epochs: 3
  batch_size: 16
"""

#: Runs maelstrom-run's entry point in-process and reports which heavy modules got imported.
IMPORT_PROBE = """\
import atexit, json, sys
heavy = {heavy!r}
atexit.register(lambda: print("IMPORTS " + json.dumps(sorted(
    m for m in sys.modules if m.split(".")[0] in heavy))))
sys.argv = ["maelstrom-run", *{args!r}]
from maelstrom_run.commands.run import main as run_main
run_main()
"""


def script(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        sys.exit(f"{name} not found beside {sys.executable} nor on PATH; install maelstrom-run first")
    return found


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return elapsed


def measure(command: list[str], cwd: Path, env: dict[str, str], runs: int) -> list[float]:
    timed(command, cwd, env)  # warm-up: page cache, .pyc files
    return [timed(command, cwd, env) for _ in range(runs)]


def imported_heavy(args: list[str], cwd: Path, env: dict[str, str]) -> list[str]:
    code = IMPORT_PROBE.format(heavy=set(HEAVY), args=list(args))
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True)
    line = next((x for x in result.stdout.splitlines() if x.startswith("IMPORTS ")), None)
    if line is None:
        raise SystemExit(f"import probe for {args} failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads(line[len("IMPORTS ") :])


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=7, help="timed runs per command (after 1 warm-up); >= 7")
    parser.add_argument(
        "--cwd",
        type=Path,
        default=None,
        help="directory to run maelstrom-run in (default: a fresh temporary directory, not a git repository; "
        "inside a repository the git capture of the working tree is part of the cost)",
    )
    args = parser.parse_args()
    runs = max(args.runs, 7)
    # wide enough for the table when the output is not a terminal
    console = Console(width=max(shutil.get_terminal_size((140, 24)).columns, 120))

    with tempfile.TemporaryDirectory(prefix="maelstrom-bench-") as tmp:
        tmp_path = Path(tmp)
        app_dir = tmp_path / "plainapp"
        app_dir.mkdir()
        (app_dir / "app.py").write_text(PLAIN_APP)
        (app_dir / "config.yaml").write_text(PLAIN_CONFIG)
        workdir = (args.cwd or tmp_path / "work").absolute()
        workdir.mkdir(parents=True, exist_ok=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MLFLOW_TRACKING_URI", "MAELSTROM_CONFIG_PATH", "HYDRA_FULL_ERROR")
        }
        env.update(MAELSTROM_HOME=str(tmp_path / "home"), COLUMNS="200")

        maelstrom_run = script("maelstrom-run")
        cases = [
            ("(a) maelstrom-run --help", [maelstrom_run, "--help"], workdir),
            ("(b) maelstrom-run app=ap1 dry_run=true", [maelstrom_run, "app=ap1", "dry_run=true"], workdir),
            ("(c) plain Hydra app --help", [sys.executable, "app.py", "--help"], app_dir),
            ("(d) plain Hydra app compose + print", [sys.executable, "app.py"], app_dir),
            ("    maelstrom-run app=ap1 --cfg job", [maelstrom_run, "app=ap1", "--cfg", "job"], workdir),
        ]
        medians: dict[str, float] = {}
        spread: dict[str, tuple[float, float]] = {}
        with console.status("measuring") as status:
            for label, command, cwd in cases:
                status.update(f"measuring {label.strip()} ({runs} runs)")
                times = measure(command, cwd, env, runs)
                medians[label] = statistics.median(times)
                spread[label] = (min(times), max(times))

        status_checks = {
            "--help": imported_heavy(["--help"], workdir, env),
            "app=ap1 dry_run=true": imported_heavy(["app=ap1", "dry_run=true"], workdir, env),
        }

    a, b, c, d, cfg_job = (medians[label] for label, _, _ in cases)
    ratio = {
        cases[0][0]: a / c,
        cases[1][0]: b / d,
        cases[2][0]: 1.0,
        cases[3][0]: 1.0,
        cases[4][0]: cfg_job / d,
    }
    target = {cases[0][0]: HELP_TARGET_S, cases[1][0]: COMPOSE_TARGET_S}

    table = Table(
        title=f"CLI overhead: median of {runs} fresh processes after 1 warm-up "
        f"(Python {sys.version.split()[0]}, {os.cpu_count()} CPUs)",
        title_justify="left",
    )
    for column in ("command", "median s", "min s", "max s", "vs baseline", "target", "result"):
        table.add_column(column, justify="left" if column == "command" else "right")
    failed = False
    for label, _, _ in cases:
        goal = target.get(label)
        ok = None if goal is None else medians[label] <= goal
        failed |= ok is False
        table.add_row(
            label,
            f"{medians[label]:.3f}",
            f"{spread[label][0]:.3f}",
            f"{spread[label][1]:.3f}",
            f"{ratio[label]:.2f}x",
            "-" if goal is None else f"<= {goal:.1f} s",
            "-" if ok is None else ("[green]PASS[/]" if ok else "[red]FAIL[/]"),
        )
    console.print(table)
    console.print("baselines: (a) vs (c), (b) and --cfg job vs (d)")
    ok = ratio[cases[1][0]] <= COMPOSE_TARGET_RATIO
    failed |= not ok
    console.print(
        f"{'[green]PASS[/]' if ok else '[red]FAIL[/]'} (b) is {ratio[cases[1][0]]:.2f}x (d) "
        f"(target <= {COMPOSE_TARGET_RATIO}x)"
    )

    for path, modules in status_checks.items():
        if modules:
            failed = True
            console.print(f"[red]FAIL[/] maelstrom-run {path} imported {', '.join(modules)}")
        else:
            console.print(f"[green]PASS[/] maelstrom-run {path} imported none of {', '.join(HEAVY)}")
    console.print("[red]FAIL[/]" if failed else "[green]PASS[/]", "overall")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
