"""``maelstrom import mantik ...`` and ``maelstrom export mlproject ...``."""

from __future__ import annotations

import argparse
import os
import re
import shlex
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..interop import Report, literal

IMPORT_HELP = """\
Write conf/app/NAME.yaml (an app running the MLproject entry point's command, its parameters as
app.params) and, from a Mantik compute-backend config (YAML or JSON), conf/backend/NAME.yaml
(UNICORE, FirecREST or Slurm over SSH; resources, environment, exclude; credentials as secret
references to MANTIK_UNICORE_USERNAME/_PASSWORD, MANTIK_FIRECREST_CLIENT_ID/_SECRET or
MANTIK_SSH_USERNAME/_PRIVATE_KEY). Unknown keys are reported (--strict: refused). Run the app
from the project directory: maelstrom-run --config-dir OUT app=NAME backend=NAME.

examples:
  maelstrom import mantik MLproject compute-backend-config.yaml
  maelstrom import mantik path/to/project unicore-config.json --name ap-tweets --out conf
  maelstrom import mantik MLproject --entry-point evaluate --name tweets-eval
  maelstrom import mantik MLproject --all-entry-points     # apps NAME-main, NAME-evaluate, ...
"""

EXPORT_HELP = """\
Compose the config as maelstrom-run would and write an MLproject (with python_env.yaml) whose
entry point main runs `maelstrom-run` with the same overrides: each value override is a parameter
(type and default from the value), config group choices stay fixed.

examples:
  maelstrom export mlproject app=ap1 model.learning_rate=0.01 train.epochs=2
  maelstrom export mlproject app=ap2 backend=juwels --out deploy/ap2
then: mlflow run DIR --env-manager local [-P model_learning_rate=0.001]
"""


def _name(text: str, what: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    if not name:
        raise ConfigError(f"{what} {text!r}: no usable config name in it; give one with --name NAME")
    return name


def _yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True, width=1000)


def _comment(lines: list[str]) -> str:
    return "".join(f"# {line}\n" for line in lines)


def _refuse_existing(paths: list[Path], force: bool) -> None:
    existing = [str(p) for p in paths if p.exists()]
    if existing and not force:
        raise ConfigError(f"{existing[0]}: exists; remove it, or overwrite with --force")


def _shown(path: Path, base: Path) -> str:
    """``path`` as the user would type it from ``base``: relative when it lies below, else absolute."""
    try:
        return str(path.resolve().relative_to(base.resolve())) or "."
    except ValueError:
        return str(path.resolve())


def _environment(environment: dict[str, Any], backend: dict[str, Any] | None, report: Report) -> list[str]:
    """Carry the MLproject's environment over where it maps (a Docker image as the Apptainer image
    of a backend config that has none); returns comment lines recording it."""
    if not environment:
        return []
    (kind, value), *_ = environment.items()
    if kind != "docker_env":
        report.notes.append(
            f"{kind}: {value} is not installed by maelstrom-run; the command runs in the backend's environment "
            "(backend.environment: venv, modules, apptainer), which needs its packages and maelstrom-run"
        )
        return [f"MLproject environment: {kind}: {value} (install its packages where the command runs)"]
    if not isinstance(value, dict) or not value.get("image"):
        raise ConfigError("docker_env: needs an image (docker_env.image)")
    image = str(value["image"])
    for key in value:
        if key not in ("image", "volumes", "environment"):
            report.unknown_key(f"docker_env.{key}", ["image", "volumes", "environment"])
    record = [f"MLproject environment: docker_env image {image}"]
    env = (backend or {}).get("environment") or {}
    if backend is None:
        report.notes.append(f"docker_env: image {image} not used by the local backend; the command runs here")
    elif (env.get("apptainer") or {}).get("image") or env.get("venv"):
        report.notes.append(
            f"docker_env: image {image} not used; the backend config's own environment is (as with Mantik)"
        )
    else:
        options = [f"--bind={literal(str(v))}" for v in value.get("volumes") or []]
        variables: dict[str, str] = {}
        for item in value.get("environment") or []:
            if isinstance(item, list) and len(item) == 2:
                variables[str(item[0])] = literal(str(item[1]))
            elif isinstance(item, str):
                variables[item] = f"${{oc.env:{item},''}}"
            else:
                raise ConfigError(f"docker_env.environment: {item!r} is neither NAME nor [NAME, VALUE]")
        env = backend.setdefault("environment", {})
        env["apptainer"] = {"image": f"docker://{image}", **({"options": options} if options else {})}
        if variables:
            env["variables"] = {**variables, **(env.get("variables") or {})}
        report.mapped.append("docker_env")
        report.notes.append(
            f"docker_env: Apptainer runs docker://{image}; the image needs maelstrom-run (the job runs "
            "`python -m maelstrom_run.worker` in it)"
        )
        record.append(f"  -> backend.environment.apptainer.image: docker://{image}")
    return record


def cmd_import_mantik(args: argparse.Namespace) -> int:
    from ..interop import mantik, mlproject
    from .console import make_console

    project_file = mlproject.find(Path(args.mlproject))
    data = mlproject.load(project_file)
    if not args.name and not data.get("name"):
        raise ConfigError(f"{project_file}: no name in the MLproject; give one with --name NAME")
    name = _name(args.name or str(data["name"]), "MLproject name")
    if (Path(__file__).resolve().parents[1] / "conf" / "app" / f"{name}.yaml").exists():
        raise ConfigError(
            f"app name {name!r}: a shipped app has it; give the imported one another with --name NAME"
        )
    backend_name = _name(args.backend_name or name, "backend name")
    if backend_name == "local":
        raise ConfigError(
            "backend name 'local': the shipped local backend has it; choose another with --backend-name"
        )
    if args.all_entry_points:
        points = list(data.get("entry_points") or {}) if isinstance(data.get("entry_points"), dict) else []
        if not points:
            raise ConfigError(f"{project_file}: entry_points: none to import (--all-entry-points)")
        chosen = [(point, _name(f"{name}-{point}", "entry point")) for point in points]
    else:
        chosen = [(args.entry_point, name)]
    apps = []
    report = Report()
    environment: dict[str, Any] = {}
    for point, app_name in chosen:
        app, environment, point_report = mlproject.to_app(data, point, app_name, str(project_file))
        if args.all_entry_points:  # every entry point is imported: no "also there" notes
            point_report.notes = [n for n in point_report.notes if not n.startswith("entry_points:")]
        report.merge(point_report)
        apps.append((point, app))
    backend = None
    if args.backend_config:
        source = Path(args.backend_config)
        backend, backend_report = mantik.to_backend(mantik.read_config(source), backend_name, str(source))
        report.merge(backend_report)
    record = _environment(environment, backend, report)

    err = make_console(stderr=True)
    for line in report.unknown:
        err.print(f"warning: {line}", highlight=False, soft_wrap=True, markup=False)
    if report.unknown and args.strict:
        raise ConfigError(f"{len(report.unknown)} unknown key(s) (--strict); nothing written")

    out = Path(args.out)
    app_files = [out / "app" / f"{app['name']}.yaml" for _, app in apps]
    backend_file = out / "backend" / f"{backend_name}.yaml"
    _refuse_existing([*app_files, *([backend_file] if backend else [])], args.force)
    written = []
    for (point, app), app_file in zip(apps, app_files, strict=True):
        header = [
            f"MLproject {data.get('name') or name}, entry point {point}: imported from {project_file}",
            "by `maelstrom import mantik`. The command runs in the directory maelstrom-run starts in",
            "(its staged copy on clusters); parameters: app.params.NAME=VALUE.",
            *record,
        ]
        app_file.parent.mkdir(parents=True, exist_ok=True)
        app_file.write_text("# @package _global_\n" + _comment(header) + _yaml({"app": app}))
        written.append(app_file)
    if backend is not None:
        kind = backend["kind"]
        credentials = backend.get("credentials") or {
            k: v for k, v in backend["ssh"].items() if k in ("user", "private_key")
        }
        secrets = " and ".join(v.removeprefix("${secret:env:").rstrip("}") for v in credentials.values())
        label = {"unicore": "UNICORE", "firecrest": "FirecREST"}.get(kind, "Slurm over SSH")
        backend_header = [
            f"{label} backend {backend_name}: imported from {args.backend_config}",
            "(a Mantik compute-backend config) by `maelstrom import mantik`. As with Mantik, the",
            f"credentials come from {secrets},",
            "the account from MANTIK_COMPUTE_BUDGET_ACCOUNT.",
        ]
        if kind == "firecrest":
            backend_header.append(
                "Set backend.workdir to a directory on the cluster for the run directories."
            )
        backend_file.parent.mkdir(parents=True, exist_ok=True)
        backend_file.write_text(_comment(backend_header) + _yaml(backend))
        written.append(backend_file)

    console = make_console()
    sources = f"MLproject {project_file}" + (f" and Mantik config {args.backend_config}" if backend else "")
    console.print(f"imported {sources}:", highlight=False, soft_wrap=True)
    for path in written:
        console.print(f"  wrote {path}", highlight=False, soft_wrap=True)
    console.print(
        f"  {len(report.mapped)} key(s) mapped, {len(report.unknown)} unknown (not imported)",
        highlight=False,
        soft_wrap=True,
    )
    for line in report.notes:
        err.print(f"note: {line}", highlight=False, soft_wrap=True, markup=False)
    project_dir = project_file.resolve().parent
    _, app = apps[0]
    missing = [f"app.params.{p}=VALUE" for p, v in app["params"].items() if v == "???"]
    cd = "" if project_dir == Path.cwd().resolve() else f"cd {shlex.quote(str(project_dir))} && "
    words = ["maelstrom-run", "--config-dir", shlex.quote(_shown(out, project_dir)), f"app={app['name']}"]
    if backend is not None:
        words.append(f"backend={backend_name}")
    console.print(
        f"next: {cd}{' '.join([*words, *missing, 'dry_run=true'])}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    return 0


def cmd_export_mlproject(args: argparse.Namespace) -> int:
    from ..config.compose import compose_config
    from ..interop import mlproject
    from .console import make_console

    out = Path(args.out)
    mlproject.parse_overrides(args.overrides)  # a sweep or a malformed override: one line, before composing
    if args.config_dir and not Path(args.config_dir).expanduser().is_dir():
        raise ConfigError(f"--config-dir {args.config_dir}: no such directory; nothing was written")
    previous = os.environ.get("MAELSTROM_CONFIG_PATH")
    if args.config_dir:
        os.environ["MAELSTROM_CONFIG_PATH"] = os.pathsep.join(
            [str(Path(args.config_dir).expanduser().absolute()), *([previous] if previous else [])]
        )
    try:
        config = compose_config(args.overrides)
    finally:
        if args.config_dir:
            if previous is None:
                os.environ.pop("MAELSTROM_CONFIG_PATH", None)
            else:
                os.environ["MAELSTROM_CONFIG_PATH"] = previous
    name = _name(args.name or config["app"]["name"], "app name")
    config_dir = _shown(Path(args.config_dir), out) if args.config_dir else None
    project, parameters = mlproject.to_mlproject(name, list(args.overrides), config, config_dir)
    files = [out / "MLproject", out / "python_env.yaml"]
    _refuse_existing(files, args.force)
    out.mkdir(parents=True, exist_ok=True)
    header = _comment(
        [
            f"Runs maelstrom-run app {config['app']['name']} with `mlflow run`; written by `maelstrom export mlproject`.",
            "Parameters: the overrides it was exported with (dots in their names as _).",
        ]
    )
    files[0].write_text(header + _yaml(project))
    files[1].write_text(_yaml(mlproject.python_env(config)))
    console = make_console()
    console.print(
        f"exported app {config['app']['name']} as MLproject {name}:", highlight=False, soft_wrap=True
    )
    for path in files:
        console.print(f"  wrote {path}", highlight=False, soft_wrap=True)
    specs = project["entry_points"]["main"].get("parameters") or {}
    for param in parameters:
        spec = specs[param]
        console.print(
            f"  parameter {param} ({spec['type']}, default {spec['default']!r})",
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"  command: {project['entry_points']['main']['command']}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
    example = f" -P {parameters[0]}=VALUE" if parameters else ""
    console.print(
        f"next: mlflow run {out} --env-manager local{example}", highlight=False, soft_wrap=True, markup=False
    )
    return 0


def add_commands(groups: Any) -> None:
    """Add the ``import`` and ``export`` command groups to the ``maelstrom`` parser."""
    group = groups.add_parser("import", help="configs from other tools: Mantik, MLflow Projects")
    sub = group.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "mantik",
        help="an MLproject and a Mantik backend config as app and backend configs",
        description=IMPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("mlproject", help="the MLproject file, or the project directory holding it")
    p.add_argument("backend_config", nargs="?", help="Mantik compute-backend config (YAML or JSON)")
    p.add_argument("--name", help="name of the app (default: the MLproject's name)")
    p.add_argument("--backend-name", help="name of the backend config (default: the app's name)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--entry-point", "-e", default="main", help="MLproject entry point (default: main)")
    which.add_argument(
        "--all-entry-points",
        action="store_true",
        help="import every entry point, each as its own app NAME-ENTRY",
    )
    p.add_argument("--out", default="conf", help="config directory to write into (default: ./conf)")
    p.add_argument("--strict", action="store_true", help="refuse (exit 2, write nothing) on unknown keys")
    p.add_argument("--force", action="store_true", help="overwrite configs that exist")
    p.set_defaults(func=cmd_import_mantik)

    group = groups.add_parser("export", help="runs as configs of other tools: MLflow Projects")
    sub = group.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "mlproject",
        help="an MLproject that runs an app with `mlflow run`",
        description=EXPORT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, as for maelstrom-run")
    p.add_argument("--out", default=".", help="directory for MLproject and python_env.yaml (default: .)")
    p.add_argument("--name", help="MLproject name (default: the app's name)")
    p.add_argument("--config-dir", help="a config directory of yours, as for maelstrom-run")
    p.add_argument("--force", action="store_true", help="overwrite an MLproject that exists")
    p.set_defaults(func=cmd_export_mlproject)
