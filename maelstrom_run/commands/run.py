"""maelstrom-run: compose configs with Hydra, validate, and run or submit.

Examples:

    maelstrom-run app=ap1                                  # train AP1 locally, tracked in MLflow
    maelstrom-run app=ap2 backend=juwels loader.threads=96 --cfg job
    maelstrom-run --multirun app=ap1 model.learning_rate=0.01,0.001 train.epochs=1
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

from ..core.errors import EXIT_FAILED, EXIT_USER_ERROR
from ..core.paths import user_config_dirs
from .errors import report

PROGRAM = "maelstrom-run"


#: ``--verbose``: show the frameworks' own start-up lines too (they are in the job's log files anyway).
_VERBOSE = False


def task(cfg: Any) -> Any:
    """The Hydra task of a single (non-sweep) run."""
    try:
        return _run_single(cfg)
    except Exception as exc:  # noqa: BLE001 - ends here, before Hydra adds lines of its own
        sys.exit(report(PROGRAM, exc, sys.argv[1:]))


def _run_single(cfg: Any) -> Any:
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from ..launch.spec import build
    from ..launch.submit import default_wait, submit
    from .console import print_run_summary
    from .summaries import print_dry_run, wait_view

    hydra_cfg = HydraConfig.get()
    # as typed: an override's own ``${...}`` is resolved in the config, where its key is known
    overrides = [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]
    if (cfg.get("schedule") or {}).get("name", "none") != "none":  # register a schedule, run nothing now
        from ..schedule.scheduler import register
        from .schedules import print_registration

        registration = register(cfg, overrides)
        print_registration(registration)
        return registration.record.schedule_id if registration.registered else None
    spec = build(cfg, overrides)
    _print_env_summary(spec)
    if spec.config.get("dry_run"):
        print_dry_run([spec])
        return None
    wait = default_wait(spec.backend, hydra_cfg.launcher.get("wait") if "launcher" in hydra_cfg else None)
    (record,) = submit([spec], wait=wait, view=wait_view(follow=True, verbose=_VERBOSE))
    print_run_summary(record)
    if record.state in ("failed", "cancelled"):
        # the app found a mistake in the config or the data (its one line is in the summary): 2
        sys.exit(EXIT_USER_ERROR if record.exit_code == EXIT_USER_ERROR else EXIT_FAILED)
    return record.run_id


def _print_env_summary(spec: Any) -> None:
    """One line: the environment against the frozen experiment's record (when run from one)."""
    from ..launch.envdrift import summary

    line = summary(spec)
    if line:
        print(line, file=sys.stderr)


task.__maelstrom_app__ = True  # type: ignore[attr-defined]


HELP = """\
maelstrom-run: compose, validate and run (or submit) weather & climate ML jobs, tracked in MLflow.

Usage:
  maelstrom-run [GROUP=OPTION ...] [KEY=VALUE ...]          one run (waits for local runs)
  maelstrom-run --multirun KEY=A,B [KEY=X,Y ...]            a sweep: one submission, one MLflow parent run
  maelstrom-run ... --cfg job                               print the composed config and stop
  maelstrom-run ... dry_run=true                            print what would be submitted and stop
  maelstrom-run ... schedule=weekly                         register a schedule (runs fired by `maelstrom scheduler`)

Config groups (choose one option with GROUP=OPTION):
{groups}
Examples:
  maelstrom-run app=ap1                                     AP1 tiny tier, locally, MLflow in $MAELSTROM_HOME
  maelstrom-run app=ap2 backend=juwels loader.threads=96 --cfg job
  maelstrom-run --multirun app=ap1 model.learning_rate=0.01,0.001 train.epochs=1
  maelstrom-run -m app=ap1 backend=slurm model.learning_rate=0.1,0.01   one Slurm job array; then maelstrom runs watch
  maelstrom-run app=ap1 tracking.uri=http://127.0.0.1:5000  (or set MLFLOW_TRACKING_URI)

Options:
  hydra.launcher.wait=BOOL    wait for the jobs to end (default: yes locally, no on clusters)
  --verbose                   also show the frameworks' own log lines (TensorFlow, MLflow, warnings);
                              they are always in the job's log files (maelstrom runs logs ID --stderr)
  --config-dir DIR            add a config directory (also MAELSTROM_CONFIG_PATH=DIR1:DIR2, searched first)
  +experiment=NAME            compose conf/experiment/NAME.yaml (a frozen run: `maelstrom runs freeze`)
  --strict-env                refuse to run when packages differ from the frozen experiment's record
  --hydra-help                Hydra's own options

Tab completion of config groups and keys (Hydra's): eval "$(maelstrom-run -sc install=bash)"
State: runs, the run registry and the embedded MLflow store live in $MAELSTROM_HOME (default ~/.maelstrom).
Manage runs with: maelstrom runs list | info | status | watch | logs | cancel | download | rerun | resume | sync
Schedules (schedule=hourly|daily|weekly|monthly|quarterly|cron, schedule.timezone=Europe/Berlin,
schedule.end=2026-12-31): maelstrom schedules list | show | next | pause | resume | remove | export
Labels (labels.task=..., see `maelstrom labels list`): maelstrom search | recommend
"""


def config_dirs(argv: list[str]) -> list[Path]:
    """Config directories in search order: --config-dir, $MAELSTROM_CONFIG_PATH, the shipped conf/."""
    dirs = []
    for i, arg in enumerate(argv):
        if arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            dirs.append(Path(argv[i + 1]))
        elif arg.startswith("--config-dir="):
            dirs.append(Path(arg.split("=", 1)[1]))
    return [*dirs, *user_config_dirs(), Path(__file__).parent.parent / "conf"]


def help_text(argv: list[str]) -> str:
    """The ``--help`` page, listing config groups from the search path without composing anything."""
    groups: dict[str, set[str]] = {}
    for directory in config_dirs(argv):
        for group in sorted(p for p in directory.expanduser().glob("*") if p.is_dir()):
            options = {f.stem for f in group.glob("*.yaml")}
            if options:
                groups.setdefault(group.name, set()).update(options)
    # the experiment group is in no defaults list: it is added (+experiment=NAME), not chosen
    listing = "".join(
        f"  {'+' if g == 'experiment' else ''}{g}: {', '.join(sorted(o))}\n"
        for g, o in sorted(groups.items())
    )
    return HELP.format(groups=listing)


def _mode_from_the_command_line(argv: list[str]) -> None:
    """Spare the start-up one whole composition of the config.

    Before it runs anything, Hydra composes the complete config once only to read ``hydra.mode``
    (a config may make --multirun its default), then composes it again to run. maelstrom-run's
    primary config sets no mode, so unless an override names it, or another primary config is named
    or brought by a config directory of the user's, the mode is the command line's, as Hydra finds it.
    """
    from hydra._internal.hydra import Hydra

    other_primary = {"--config-name", "-cn", "--config-path", "-cp"} & {a.split("=", 1)[0] for a in argv}
    if other_primary or any("hydra.mode" in a for a in argv):
        return
    if any((d / "config.yaml").is_file() for d in config_dirs(argv)[:-1]):
        return
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]


def _validate_shown_config() -> None:
    """Make ``--cfg job`` (Hydra prints the config and never calls the task) check the config as a run
    does, so a value a run would refuse is refused there too (a mandatory ``???`` still to be filled
    is shown, not refused)."""
    from hydra._internal.hydra import Hydra
    from hydra.types import RunMode

    show = Hydra.show_cfg
    if getattr(show, "__maelstrom_validates__", False):
        return

    def show_cfg(
        self: Any, config_name: Any, overrides: list[str], cfg_type: str, *args: Any, **kw: Any
    ) -> Any:
        if cfg_type in ("job", "all"):
            from ..config.compose import resolve_config
            from ..config.validate import validate

            cfg = self.compose_config(
                config_name, overrides, run_mode=RunMode.RUN, with_log_configuration=False
            )
            validate(resolve_config(cfg), missing_ok=True)  # ??? is shown as still to be filled
        return show(self, config_name, overrides, cfg_type, *args, **kw)

    show_cfg.__maelstrom_validates__ = True  # type: ignore[attr-defined]
    Hydra.show_cfg = show_cfg  # type: ignore[method-assign]


def _check_arguments(argv: list[str]) -> None:
    """Hydra's own argument parser, run first with its errors as one line (argparse prints its
    usage block and then the error)."""
    from hydra._internal.utils import get_args_parser

    parser = get_args_parser()

    def error(message: str) -> NoReturn:
        print(f"{PROGRAM}: error: {message}; see {PROGRAM} --help", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)

    parser.error = error  # type: ignore[method-assign]
    _, unknown = parser.parse_known_args(argv)
    flags = [a for a in unknown if a.startswith("-")]
    if flags:
        error(f"unrecognized arguments: {' '.join(flags)}; overrides are key=value")
    if unknown:  # argparse takes the overrides as one run of arguments
        error(f"unrecognized arguments: {' '.join(unknown)}; put all key=value overrides together")


def main() -> None:
    """Console entry point of ``maelstrom-run``."""
    if "--help" in sys.argv[1:] or "-h" in sys.argv[1:]:
        print(help_text(sys.argv[1:]), end="")
        return
    global _VERBOSE
    if "--verbose" in sys.argv[1:]:  # ours, not Hydra's
        _VERBOSE = True
        sys.argv.remove("--verbose")
    if "--strict-env" in sys.argv[1:]:  # ours, not Hydra's: for every spec this process builds
        sys.argv.remove("--strict-env")
        from ..launch.envdrift import STRICT_ENV

        os.environ[STRICT_ENV] = "1"
    import hydra

    from ..config.resolvers import register

    register()
    # Let errors reach us so user errors become one clear line (Hydra would print a trace).
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    # relative to this module's package: maelstrom_run/conf, as Hydra's main config source
    app = hydra.main(config_path="../conf", config_name="config", version_base="1.3")(task)
    _check_arguments(sys.argv[1:])
    _mode_from_the_command_line(sys.argv[1:])
    _validate_shown_config()
    if {"--multirun", "-m"} & set(sys.argv[1:]) and any(
        a.startswith("schedule") and a != "schedule=none" for a in sys.argv[1:]
    ):
        print(
            "maelstrom-run: error: schedule= and --multirun: register one schedule per job", file=sys.stderr
        )
        sys.exit(2)
    try:
        app()
    except KeyboardInterrupt:
        print("maelstrom-run: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the one error boundary: one line, exit 2 (or 1 for a bug)
        sys.exit(report(PROGRAM, exc, sys.argv[1:]))


if __name__ == "__main__":
    main()
