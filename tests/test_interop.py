"""Mantik and MLflow Projects interop: ``maelstrom import mantik`` and ``maelstrom export mlproject``.

The fixtures in ``tests/data/interop/`` are written as real projects write them: MLproject files
(python_env, conda_env, docker_env; the documented parameter types and ``str``, ``bool``,
``integer``, a default of ``None``) and Mantik compute-backend configs (YAML and JSON, UNICORE and
FirecREST, the older ``PreRunCommand{Command, ExecuteOnLoginNode}`` form).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from slurm_cluster import slurm  # noqa: F401  (fixture)

from maelstrom_run.config.units import time_limit_seconds
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.interop import command, mantik, mlproject

DATA = Path(__file__).parent / "data" / "interop"


def _import(run_cli: Any, cli_env: dict[str, str], cwd: Path, *args: str) -> Any:
    return run_cli(["maelstrom", "import", "mantik", *map(str, args)], cwd=cwd, env=cli_env)


def _load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def _project(tmp_path: Path, name: str) -> Path:
    """A copy of a fixture project outside this repository (so nothing of ours is staged)."""
    target = tmp_path / name
    shutil.copytree(DATA / name, target)
    return target


# -- the backend config ----------------------------------------------------------------------------


def test_import_unicore_maps_every_key(tmp_path: Path, run_cli: Any, cli_env: dict[str, str]) -> None:
    project = _project(tmp_path, "tweets")
    out = tmp_path / "conf"
    result = _import(run_cli, cli_env, tmp_path, project, DATA / "unicore-juwels.yaml", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}/app/ap2-tweets.yaml" in result.stdout
    assert f"wrote {out}/backend/ap2-tweets.yaml" in result.stdout
    assert "0 unknown" in result.stdout and "warning" not in result.stderr
    backend = _load(out / "backend" / "ap2-tweets.yaml")
    assert backend["defaults"] == ["local", "_self_"]
    assert backend["kind"] == "unicore"
    assert backend["url"] == "https://zam2125.zam.kfa-juelich.de:9112/JUWELS/rest/core"
    assert backend["credentials"] == {
        "username": "${secret:env:MANTIK_UNICORE_USERNAME}",
        "password": "${secret:env:MANTIK_UNICORE_PASSWORD}",
    }
    assert backend["resources"] == {
        "queue": "booster",
        "time": "2h",
        "nodes": 2,
        "tasks_per_node": 1,
        "cpus_per_task": 48,
        "gpus_per_node": 4,
        "memory": "64G",
        "reservation": "maelstrom-ap2",
        "constraint": "largedata",
        "qos": "normal",
        "account": "${oc.env:MANTIK_COMPUTE_BUDGET_ACCOUNT,null}",
    }
    env = backend["environment"]
    assert env["apptainer"] == {
        "image": "/p/project/deepacf/maelstrom/images/ap2.sif",
        "options": ["--nv", "-B", "/p/scratch/deepacf:/data"],
    }
    assert env["modules"] == ["Stages/2024", "GCC", "ParaStationMPI"]
    assert env["variables"] == {"NCCL_DEBUG": "INFO", "OMP_NUM_THREADS": "12"}
    # a variable that expands a shell variable is exported on the compute node, before the user's commands
    assert env["pre_commands"] == [
        "export DATA_DIR=\\${SCRATCH}/maelstrom/ap2",
        "nvidia-smi",
    ]  # as Mantik writes it
    assert env["post_commands"] == ['echo "done on \\${SLURMD_NODENAME}"']
    assert env["login_pre_commands"] == ['echo "precommand on login node"', "mkdir -p $SCRATCH/maelstrom"]
    assert env["login_post_commands"] == ['echo "postcommand on login node"']
    assert backend["exclude"][-3:] == ["*.sif", "mlruns/", "data/raw"]
    assert ".git/**" in backend["exclude"]  # the local backend's globs come first
    # MLproject: name, conda_env, command, 9 parameters; backend: the URL, 10 resources, 9 environment
    # keys (Apptainer Path, Type, Options, Variables, Modules, 4 run commands), Exclude
    assert "33 key(s) mapped" in result.stdout
    assert "next: cd" in result.stdout and "app.params.data_dir=VALUE" in result.stdout


def test_every_documented_key_is_mapped_by_some_fixture() -> None:
    mapped: set[str] = set()
    for name in (
        "unicore-juwels.yaml",
        "unicore-jureca.json",
        "firecrest-daint.yaml",
        "unicore-old-precommand.yaml",
        "ssh-juwels.yaml",
    ):
        _, report = mantik.to_backend(mantik.read_config(DATA / name), "x", name)
        assert report.unknown == []
        mapped |= set(report.mapped)
    assert set(mantik.MAPPING) <= mapped, set(mantik.MAPPING) - mapped


def test_json_config(tmp_path: Path) -> None:
    data = mantik.read_config(DATA / "unicore-jureca.json")
    backend, report = mantik.to_backend(data, "jureca-ap1", "unicore-jureca.json")
    assert backend["url"].endswith("/JURECA/rest/core")
    assert backend["environment"]["venv"] == "/p/project/deepacf/maelstrom/venvs/ap1"
    assert backend["environment"]["variables"] == {"TF_CPP_MIN_LOG_LEVEL": "2"}
    res = backend["resources"]
    assert (res["queue"], res["time"], res["nodes"], res["gpus_per_node"]) == ("dc-gpu", "30m", 3, 4)
    # TotalCPUs alone: spread over the nodes, rounded up, and said so
    assert (res["tasks_per_node"], res["cpus_per_task"]) == (1, 34)
    assert any("100 CPUs on 3 node(s) rounded up to 34" in n for n in report.notes)
    assert backend["exclude"][-1] == "*.nc"
    broken = tmp_path / "broken.json"
    broken.write_text('{"UnicoreApiUrl": "https://x", }')
    with pytest.raises(ConfigError, match=r"broken.json: not valid JSON \(line 1, column 32\)"):
        mantik.read_config(broken)


def test_firecrest_config() -> None:
    backend, report = mantik.to_backend(
        mantik.read_config(DATA / "firecrest-daint.yaml"), "daint-ap5", "f.yaml"
    )
    assert backend["kind"] == "firecrest"
    assert backend["url"] == "https://firecrest.cscs.ch"
    assert backend["machine"] == "daint"
    assert backend["token_url"].endswith("/openid-connect/token")
    assert backend["credentials"] == {
        "client_id": "${secret:env:MANTIK_FIRECREST_CLIENT_ID}",
        "client_secret": "${secret:env:MANTIK_FIRECREST_CLIENT_SECRET}",
    }
    assert backend["environment"]["venv"] == "/scratch/snx3000/maelstrom/venvs/ap5"  # Python as a plain path
    assert backend["environment"]["pre_commands"] == ["source $HOME/.bashrc"]  # one string is a list of one
    res = backend["resources"]
    assert (res["time"], res["cpus_per_task"], res["gpus_per_node"], res["constraint"]) == (
        "1d",
        12,
        1,
        "gpu",
    )
    assert any(n.startswith("backend.workdir") for n in report.notes)


def test_old_precommand_form() -> None:
    backend, report = mantik.to_backend(
        mantik.read_config(DATA / "unicore-old-precommand.yaml"), "old", "unicore-old-precommand.yaml"
    )
    env = backend["environment"]
    assert env["pre_commands"] == [
        "module load Stages/2022 GCCcore/.11.2.0 Python/3.9.6"
    ]  # on the compute node
    assert env["login_post_commands"] == ['echo "run finished"']  # ExecuteOnLoginNode: True
    assert "login_pre_commands" not in env and "post_commands" not in env
    assert env["apptainer"] == {"image": "mantik-ap1.sif"}  # local: relative to the project, staged with it
    assert {"Environment.PreRunCommand", "Environment.PostRunCommand"} <= set(report.mapped)
    assert any("staged code" in n for n in report.notes)


def test_unknown_keys_reported_and_strict_refuses(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    project = _project(tmp_path, "wine")
    config = DATA / "unicore-unknown-keys.yaml"
    result = _import(run_cli, cli_env, tmp_path, project, config, "--out", tmp_path / "conf")
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert "warning: Project: unknown key" in warnings[0]
    assert any("Resources.Nodez: unknown key, not imported; did you mean 'Nodes'?" in w for w in warnings)
    assert any(w.startswith("warning: Environment.Conda: unknown key") for w in warnings)
    assert len(warnings) == 3
    assert "3 unknown" in result.stdout
    backend = _load(tmp_path / "conf" / "backend" / "tutorial.yaml")
    assert backend["resources"]["time"] == "1h"  # Runtime 3600: seconds, as UNICORE reads it
    assert "nodes" not in backend["resources"]

    strict = _import(run_cli, cli_env, tmp_path, project, config, "--out", tmp_path / "strict", "--strict")
    assert strict.returncode == 2
    assert "3 unknown key(s) (--strict); nothing written" in strict.stderr
    assert not (tmp_path / "strict").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"UnicoreApiUrl": "u", "Resources": {"Nodes": "two"}},
            r"Resources.Nodes: expected a whole number >= 1",
        ),
        (
            {"UnicoreApiUrl": "u", "Resources": {"Runtime": "soon"}},
            r"Resources.Runtime: 'soon' is not a run time",
        ),
        (
            {"UnicoreApiUrl": "u", "Resources": {"GPUsPerNode": True}},
            r"Resources.GPUsPerNode: expected a whole",
        ),
        ({"UnicoreApiUrl": "u", "Resources": ["batch"]}, r"Resources: expected a mapping"),
        (
            {"UnicoreApiUrl": "u", "Environment": {"Modules": {"a": 1}}},
            r"Environment.Modules: expected a string",
        ),
        (
            {"UnicoreApiUrl": "u", "Environment": {"Apptainer": {"Path": "i.sif", "Type": "cloud"}}},
            r"Environment.Apptainer.Type: 'cloud' is not one of",
        ),
        (
            {"UnicoreApiUrl": "u", "Environment": {"Apptainer": {"Path": "i.sif", "Type": "remote"}}},
            r"Environment.Apptainer.Path: a remote image needs an absolute path",
        ),
        (
            {"UnicoreApiUrl": "u", "Environment": {"Apptainer": {"Path": "/i.sif"}, "Python": "/venv"}},
            r"Environment: Apptainer and Python both given",
        ),
        (
            {
                "UnicoreApiUrl": "u",
                "Environment": {"PreRunCommand": {"Command": "x", "ExecuteOnLoginNode": "y"}},
            },
            r"Environment.PreRunCommand.ExecuteOnLoginNode: expected true or false",
        ),
        (
            {"UnicoreApiUrl": "u", "Firecrest": {}},
            r"give one of UnicoreApiUrl, Firecrest or SSH, not UnicoreApiUrl and Firecrest",
        ),
        ({"Firecrest": {"ApiUrl": "a", "TokenUrl": "t"}}, r"Firecrest.Machine: missing"),
        (
            {"Resources": {"Queue": "batch"}},
            r"give UnicoreApiUrl, a Firecrest section \(ApiUrl, TokenUrl, Machine\) or an SSH section",
        ),
    ],
)
def test_wrong_values_named_by_key_path(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^cfg.yaml: {message}"):
        mantik.to_backend(data, "x", "cfg.yaml")


def test_wrong_value_is_one_line_through_the_cli(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("UnicoreApiUrl: https://x\nResources:\n  Queue: batch\n  Nodes: two\n")
    result = _import(run_cli, cli_env, tmp_path, _project(tmp_path, "wine"), config)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"maelstrom: error: {config}: Resources.Nodes: expected a whole number >= 1, got 'two'"
    ]
    assert not (tmp_path / "conf").exists()


@pytest.mark.parametrize(
    ("runtime", "seconds", "text"),
    [
        (3600, 3600, "1h"),
        ("7200", 7200, "2h"),
        ("30min", 1800, "30m"),
        ("2h", 7200, "2h"),
        ("1d", 86400, "1d"),
        ("1h30m", 5400, "1h30m"),
        ("90s", 90, "1m30s"),
        ("01:30:00", 5400, "1h30m"),
        ("2 hours", 7200, "2h"),
    ],
)
def test_runtime_forms(runtime: Any, seconds: int, text: str) -> None:
    assert mantik.runtime_seconds(runtime, "Resources.Runtime", "cfg") == seconds
    assert mantik.duration(seconds) == text
    assert time_limit_seconds(text) == seconds  # what the backend reads back


# -- the MLproject ---------------------------------------------------------------------------------


def test_mlproject_parameter_types() -> None:
    data = mlproject.load(DATA / "tweets")
    app, environment, report = mlproject.to_app(data, "main", "tweets", "MLproject")
    assert app["entry"] == "maelstrom_run.interop.command:main"
    assert app["command"].startswith("python train.py --data-dir {data_dir} --epochs {epochs}")
    assert app["params"] == {
        "data_dir": "???",  # `path` without a default: mandatory, as mlflow run requires a value
        "epochs": 3,
        "learning_rate": 1e-05,  # YAML reads 1e-5 as text: typed as the declared float
        "use_gpu": False,
        "model_name": "deberta-v3-small",
        "seed": None,  # a default of None
        "tracking_uri": "file:///tmp/mlruns",
        "run_name": "???",
        "batch_size": 32,
    }
    assert app["param_types"] == {
        "data_dir": "path",
        "epochs": "int",
        "learning_rate": "float",
        "use_gpu": "bool",
        "model_name": "string",  # str
        "seed": "int",  # integer
        "tracking_uri": "uri",
        "run_name": "string",
        "batch_size": "int",
    }
    assert environment == {"conda_env": "environment.yaml"}
    assert any("also there: evaluate" in n for n in report.notes)
    assert any(n.startswith("tracking_uri: parameter(s) not in the command") for n in report.notes)
    assert report.unknown == []


def test_mlproject_unusual_parameters_and_unknown_keys() -> None:
    data = {
        "name": "odd",
        "entry_point_default": "main",
        "entry_points": {
            "main": {
                "parameters": {
                    "workers": {"type": "int", "default": "auto"},
                    "layers": {"type": "list", "default": "[1, 2]"},
                    "on": {"type": "boolean", "default": "yes"},
                    "scale": {"type": "double", "default": 2},
                    "label": {"type": "string", "default": 7, "help": "shown in the UI"},
                },
                "command": "python run.py {workers} {layers} {on} {scale} {label}",
                "environment": "x",
            }
        },
    }
    app, _, report = mlproject.to_app(data, "main", "odd", "MLproject")
    assert app["params"] == {"workers": "auto", "layers": "[1, 2]", "on": True, "scale": 2.0, "label": "7"}
    assert app["param_types"] == {
        "workers": "string",
        "layers": "string",
        "on": "bool",
        "scale": "float",
        "label": "string",
    }
    assert any("workers.default: 'auto' is not of type int" in n for n in report.notes)
    assert any("layers.type: 'list' is not an MLproject type" in n for n in report.notes)
    assert sorted(u.split(":")[0] for u in report.unknown) == [
        "entry_point_default",
        "entry_points.main.environment",
        "entry_points.main.parameters.label.help",
    ]


def test_entry_point_choice() -> None:
    data = mlproject.load(DATA / "tweets" / "MLproject")
    app, _, _ = mlproject.to_app(data, "evaluate", "tweets-eval", "MLproject")
    assert app["command"] == "python evaluate.py --checkpoint {checkpoint}"
    assert app["params"] == {"checkpoint": "???"} and app["param_types"] == {"checkpoint": "path"}
    script, _, _ = mlproject.to_app(data, "prepare data.py", "prep", "MLproject")
    assert script["command"] == "python 'prepare data.py'"  # as mlflow run -e FILE.py
    with pytest.raises(ConfigError, match=r"entry point 'train' not found \(entry points: main, evaluate\)"):
        mlproject.to_app(data, "train", "x", "MLproject")


def test_command_is_formatted_as_mlflow_run_formats_it(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    command_text = (
        "python train.py --data {data} --lr {lr} --name {name} --flag {flag} --seed {seed} {{literal}}"
    )
    params = {"data": "data", "lr": 0.5, "name": "two words; rm -rf /", "flag": True, "seed": None}
    types = {"data": "path", "lr": "float", "name": "string", "flag": "bool", "seed": "int"}
    ours = mlproject.format_command(command_text, params, types, tmp_path)
    assert ours == (
        f"python train.py --data {tmp_path / 'data'} --lr 0.5 --name 'two words; rm -rf /' "
        "--flag True --seed None {literal}"
    )
    project_spec = pytest.importorskip("mlflow.projects._project_spec")
    entry = project_spec.EntryPoint(
        "main",
        {
            name: {"type": types[name], "default": value}
            for name, value in params.items()
            if value is not None
        },
        command_text.replace("{seed}", "None"),
    )
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        theirs = entry.compute_command({}, str(tmp_path))
    finally:
        os.chdir(cwd)
    assert ours == theirs


@pytest.mark.parametrize(
    ("params", "types", "message"),
    [
        (
            {"x": "???"},
            {"x": "string"},
            r"app.params.x: missing mandatory value; give it with app.params.x=VALUE",
        ),
        ({"x": "ten"}, {"x": "int"}, r"app.params.x: 'ten' is not of type int"),
        ({"x": "nowhere/file"}, {"x": "path"}, r"app.params.x: 'nowhere/file': no such file or directory"),
        ({"x": "just-text"}, {"x": "uri"}, r"app.params.x: 'just-text' is not a URI"),
        ({}, {}, r"app.command: placeholder \{x\} has no value; add it with \+app.params.x=VALUE"),
    ],
)
def test_command_values_checked(
    tmp_path: Path, params: dict[str, Any], types: dict[str, str], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        mlproject.format_command("run {x}", params, types, tmp_path)


def _ctx(tmp_path: Path, app: dict[str, Any]) -> Any:
    from omegaconf import OmegaConf

    return SimpleNamespace(
        cfg=OmegaConf.create({"app": app}, flags={"readonly": True}),
        run_id="r1",
        run_dir=tmp_path,
        rank=0,
    )


def test_command_entry_streams_output_and_fails_on_exit_status(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    line = f"{shlex.quote(sys.executable)} -c 'import os, sys; print(sys.argv[1:], os.environ[\"MAELSTROM_RUN_ID\"])'"
    ok = {
        "command": line + " {a} {b}",
        "params": {"a": 1, "b": "x y"},
        "param_types": {"a": "int", "b": "string"},
    }
    assert command.main(_ctx(tmp_path, ok)) == {}
    assert "['1', 'x y'] r1" in capfd.readouterr().out
    failing = {"command": f"{shlex.quote(sys.executable)} -c 'import sys; sys.exit(3)'", "params": {}}
    with pytest.raises(command.CommandFailed, match=r"app.command exited with status 3"):
        command.main(_ctx(tmp_path, failing))
    with pytest.raises(ValueError, match=r"app.command: not set"):
        command.main(_ctx(tmp_path, {"params": {}}))


def test_docker_env_becomes_the_apptainer_image(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    project = _project(tmp_path, "docker")
    bare = tmp_path / "bare.yaml"
    bare.write_text(
        "UnicoreApiUrl: https://zam2125.zam.kfa-juelich.de:9112/JUWELS/rest/core\nResources: {Queue: batch}\n"
    )
    result = _import(run_cli, cli_env, tmp_path, project, bare, "--out", tmp_path / "conf")
    assert result.returncode == 0, result.stderr
    env = _load(tmp_path / "conf" / "backend" / "ap5-downscaling.yaml")["environment"]
    assert env["apptainer"] == {
        "image": "docker://ghcr.io/maelstrom/ap5:1.2",
        "options": ["--bind=/p/scratch/deepacf/ap5:/data"],
    }
    assert env["variables"] == {"DATA_DIR": "/data", "HOME": "${oc.env:HOME,''}"}
    assert (
        "docker_env image ghcr.io/maelstrom/ap5:1.2"
        in (tmp_path / "conf" / "app" / "ap5-downscaling.yaml").read_text()
    )
    # a backend config with an environment of its own keeps it (as Mantik does)
    other = _import(
        run_cli, cli_env, tmp_path, project, DATA / "unicore-juwels.yaml", "--out", tmp_path / "conf2"
    )
    assert "docker_env: image ghcr.io/maelstrom/ap5:1.2 not used" in other.stderr
    kept = _load(tmp_path / "conf2" / "backend" / "ap5-downscaling.yaml")["environment"]["apptainer"]
    assert kept["image"] == "/p/project/deepacf/maelstrom/images/ap2.sif"


def test_import_refuses_to_overwrite_and_shipped_names(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    project = _project(tmp_path, "wine")
    first = _import(run_cli, cli_env, tmp_path, project)
    assert first.returncode == 0, first.stderr
    again = _import(run_cli, cli_env, tmp_path, project)
    assert again.returncode == 2 and "exists; remove it, or overwrite with --force" in again.stderr
    assert _import(run_cli, cli_env, tmp_path, project, "--force").returncode == 0
    shipped = _import(run_cli, cli_env, tmp_path, project, "--name", "ap1")
    assert shipped.returncode == 2 and "a shipped app has it" in shipped.stderr
    local = _import(
        run_cli, cli_env, tmp_path, project, DATA / "unicore-jureca.json", "--backend-name", "local"
    )
    assert local.returncode == 2 and "backend name 'local'" in local.stderr


# -- generated configs through the real CLI --------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "project", "extra", "expect"),
    [
        (
            "unicore-juwels.yaml",
            "tweets",
            ["app.params.data_dir=.", "app.params.run_name=r1"],
            '"Queue": "booster"',
        ),
        ("unicore-jureca.json", "wine", [], '"CPUsPerNode": "34"'),
        ("unicore-old-precommand.yaml", "wine", [], "module load Stages/2022 GCCcore/.11.2.0 Python/3.9.6"),
        (
            "firecrest-daint.yaml",
            "wine",
            ["backend.workdir=/scratch/snx3000/me/maelstrom"],
            "#SBATCH --time=1-00:00:00",
        ),
    ],
)
def test_generated_configs_compose_and_validate(
    tmp_path: Path,
    run_cli: Any,
    cli_env: dict[str, str],
    fixture: str,
    project: str,
    extra: list[str],
    expect: str,
) -> None:
    directory = _project(tmp_path, project)
    name = mlproject.load(directory)["name"]
    result = _import(run_cli, cli_env, directory, ".", DATA / fixture)
    assert result.returncode == 0, result.stderr
    secrets = {"MANTIK_UNICORE_PASSWORD": "hunter2-pw", "MANTIK_FIRECREST_CLIENT_SECRET": "hunter2-cs"}
    env = {**cli_env, "MANTIK_COMPUTE_BUDGET_ACCOUNT": "deepacf", **secrets}
    composed = run_cli(
        ["--config-dir", "conf", f"app={name}", f"backend={name}", "--cfg", "job", "--resolve"],
        cwd=directory,
        env=env,
    )
    assert composed.returncode == 0, composed.stderr
    job = yaml.safe_load(composed.stdout)
    assert job["app"]["entry"] == "maelstrom_run.interop.command:main"
    assert job["backend"]["kind"] == ("firecrest" if fixture.startswith("firecrest") else "unicore")
    assert job["backend"]["resources"]["account"] == "deepacf"
    # validated and rendered (no gateway contacted): what would be submitted
    dry = run_cli(
        ["--config-dir", "conf", f"app={name}", f"backend={name}", *extra, "dry_run=true"],
        cwd=directory,
        env=env,
    )
    assert dry.returncode == 0, dry.stderr
    assert expect in dry.stdout
    assert "hunter2" not in composed.stdout + dry.stdout + dry.stderr  # secrets stay references


def test_mandatory_parameter_named_when_missing(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    directory = _project(tmp_path, "tweets")
    assert _import(run_cli, cli_env, directory, ".").returncode == 0
    result = run_cli(["--config-dir", "conf", "app=ap2-tweets", "dry_run=true"], cwd=directory, env=cli_env)
    assert result.returncode == 2
    assert "app.params.data_dir: missing mandatory value" in result.stderr


@pytest.mark.slow
def test_imported_app_runs_end_to_end(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str], maelstrom_home: Path
) -> None:
    directory = _project(tmp_path, "echo")
    assert _import(run_cli, cli_env, directory, ".").returncode == 0
    result = run_cli(
        ["--config-dir", "conf", "app=echo", "app.params.alpha=0.25", "app.params.verbose=false"],
        cwd=directory,
        env=cli_env,
    )
    assert result.returncode == 0, result.stderr
    assert "params ['0.25', 'two words', 'False', 'None']" in result.stdout
    (run_dir,) = (maelstrom_home / "runs").iterdir()
    outcome = json.loads((run_dir / "result.json").read_text())
    assert outcome["state"] == "succeeded"
    # the command ran inside the run's MLflow run
    assert f"mlflow run {outcome['mlflow_run_id']}" in result.stdout
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=outcome["tracking_uri"])
    assert client.get_run(outcome["mlflow_run_id"]).data.params["app.params.alpha"] == "0.25"

    failing = run_cli(
        ["--config-dir", "conf", "app=echo", "app.command='python -c \"import sys; sys.exit(4)\"'"],
        cwd=directory,
        env=cli_env,
    )
    assert failing.returncode == 1
    info = run_cli(["maelstrom", "runs", "list", "--state", "failed"], cwd=directory, env=cli_env)
    assert "echo-" in info.stdout


# -- export ----------------------------------------------------------------------------------------


def _export(run_cli: Any, cli_env: dict[str, str], cwd: Path, *args: str) -> Any:
    return run_cli(["maelstrom", "export", "mlproject", *map(str, args)], cwd=cwd, env=cli_env)


def test_export_writes_an_mlproject_mlflow_reads(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str]
) -> None:
    out = tmp_path / "ap1"
    overrides = ["app=ap1", "model.learning_rate=0.01", "train.epochs=2", "backend=local", "run_name='a b'"]
    result = _export(run_cli, cli_env, tmp_path, *overrides, "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"next: mlflow run {out} --env-manager local -P model_learning_rate=VALUE" in result.stdout
    spec = _load(out / "MLproject")
    main = spec["entry_points"]["main"]
    assert spec["name"] == "ap1" and spec["python_env"] == "python_env.yaml"
    assert main["parameters"] == {
        "model_learning_rate": {"type": "float", "default": 0.01},
        "train_epochs": {"type": "int", "default": 2},
        "run_name": {"type": "string", "default": "'a b'"},
    }
    assert main["command"] == (
        "maelstrom-run app=ap1 model.learning_rate={model_learning_rate} train.epochs={train_epochs} "
        "backend=local run_name={run_name}"
    )
    env = _load(out / "python_env.yaml")
    assert env["python"].startswith("3.") and env["build_dependencies"] == ["pip"]
    assert env["dependencies"][0].startswith("maelstrom-run[tracking,data,tensorflow]")

    project_spec = pytest.importorskip("mlflow.projects._project_spec")
    project = project_spec.load_project(str(out))
    assert project.name == "ap1" and project.env_type == "python_env"
    entry = project.get_entry_point("main")
    line = entry.compute_command({"model_learning_rate": "0.001"}, None)
    assert shlex.split(line) == [
        "maelstrom-run",
        "app=ap1",
        "model.learning_rate=0.001",
        "train.epochs=2",
        "backend=local",
        "run_name='a b'",
    ]

    again = _export(run_cli, cli_env, tmp_path, *overrides, "--out", out)
    assert again.returncode == 2 and "exists; remove it, or overwrite with --force" in again.stderr
    sweep = _export(run_cli, cli_env, tmp_path, "app=ap1", "train.epochs=1,2", "--out", tmp_path / "s")
    assert sweep.returncode == 2 and "train.epochs=1,2: a sweep; export one run" in sweep.stderr
    typo = _export(run_cli, cli_env, tmp_path, "app=ap1", "train.epochz=1", "--out", tmp_path / "t")
    assert typo.returncode == 2 and "train.epochz" in typo.stderr


def test_round_trip(tmp_path: Path, run_cli: Any, cli_env: dict[str, str]) -> None:
    out = tmp_path / "exported"
    overrides = ["app=ap2", "model.d_model=32", "loader.threads=1", "+labels.run.hardware=cpu"]
    assert _export(run_cli, cli_env, tmp_path, *overrides, "--out", out).returncode == 0
    result = _import(run_cli, cli_env, tmp_path, out, "--name", "ap2-mlflow", "--out", tmp_path / "conf")
    assert result.returncode == 0, result.stderr
    spec = _load(out / "MLproject")["entry_points"]["main"]
    app = _load(tmp_path / "conf" / "app" / "ap2-mlflow.yaml")["app"]
    assert app["command"] == spec["command"]
    assert app["params"] == {name: p["default"] for name, p in spec["parameters"].items()}
    assert app["param_types"] == {name: p["type"] for name, p in spec["parameters"].items()}
    ours = mlproject.format_command(app["command"], app["params"], app["param_types"], tmp_path)
    assert ours == "maelstrom-run app=ap2 model.d_model=32 loader.threads=1 +labels.run.hardware=cpu"
    project_spec = pytest.importorskip("mlflow.projects._project_spec")
    assert ours == project_spec.load_project(str(out)).get_entry_point("main").compute_command({}, None)


@pytest.mark.slow
def test_exported_app_runs_with_mlflow_run(
    toy_project: Path, run_cli: Any, cli_env: dict[str, str], maelstrom_home: Path
) -> None:
    result = _export(
        run_cli, cli_env, toy_project, "--config-dir", "conf", "app=toy", "train.epochs=1", "--out", "."
    )
    assert result.returncode == 0, result.stderr
    assert (
        "maelstrom-run --config-dir conf app=toy train.epochs={train_epochs}"
        in (toy_project / "MLproject").read_text()
    )
    env = {**cli_env, "MLFLOW_TRACKING_URI": f"sqlite:///{maelstrom_home / 'mlflow.db'}"}
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    if not mlflow_cli.exists():
        pytest.skip("the mlflow command is not installed")
    run = subprocess.run(
        [str(mlflow_cli), "run", ".", "--env-manager", "local", "-P", "train_epochs=2"],
        cwd=toy_project,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "epoch 2/2" in run.stdout
    (run_dir,) = (maelstrom_home / "runs").iterdir()
    outcome = json.loads((run_dir / "result.json").read_text())
    # the run mlflow run created is the run maelstrom-run tracked
    assert f"Run (ID '{outcome['mlflow_run_id']}') succeeded" in run.stderr


# -- faithful to Mantik's job ----------------------------------------------------------------------

#: A Mantik config as the MAELSTROM applications write them: a remote image under $USER, a bind
#: mount with $USER, and a MASTER_ADDR on the InfiniBand name (``i`` appended), quotes inside.
FAITHFUL = r"""
UnicoreApiUrl: https://zam2125.zam.kfa-juelich.de:9112/JUWELS/rest/core
Resources:
  Nodes: 1
  CPUsPerNode: 2
  Runtime: 5min
Environment:
  Apptainer:
    Path: IMAGES/$USER/image.sif
    Type: remote
    Options:
      - --nv
      - -B HOMES/$USER/data:/data
  Variables:
    MASTER_ADDR: "$(scontrol show hostnames \"$SLURM_JOB_NODELIST\" | head -n 1)i"
    MASTER_PORT: 29555
    SLURM_NTASKS_PER_NODE: 2
    GREETING: '"two words"'
"""

#: Stands in for apptainer on the compute node: records what it was given, per task.
FAKE_APPTAINER = """#!/bin/bash
out="$RECORD/task-$SLURM_PROCID.json"
python3 - "$out" "$@" <<'PY'
import json, os, sys
keys = ("MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS_PER_NODE", "RANK", "WORLD_SIZE", "GREETING")
json.dump({"args": sys.argv[2:], **{k: os.environ.get(k) for k in keys}}, open(sys.argv[1], "w"))
PY
"""


def _faithful_conf(tmp_path: Path) -> tuple[Any, dict[str, Any]]:
    from omegaconf import OmegaConf

    from maelstrom_run.config.schema import SlurmConf

    text = FAITHFUL.replace("IMAGES", str(tmp_path / "images")).replace("HOMES", str(tmp_path / "homes"))
    source = tmp_path / "compute-backend-config.yaml"
    source.write_text(text)
    backend, _ = mantik.to_backend(mantik.read_config(source), "juwels-ml", str(source))
    # the imported backend as a typed slurm config (written YAML read back, as Hydra would read it)
    written = OmegaConf.create(yaml.safe_dump(backend))
    resources = {k: v for k, v in OmegaConf.to_container(written.resources).items() if k != "account"}
    merged = OmegaConf.merge(
        OmegaConf.structured(SlurmConf),
        {"name": "juwels-ml", "resources": resources, "environment": written.environment},
    )
    return OmegaConf.to_object(merged), backend


def test_imported_launch_layout_is_the_users(tmp_path: Path) -> None:
    conf, backend = _faithful_conf(tmp_path)
    # SLURM_NTASKS_PER_NODE: the allocation has those tasks, each with its share of the node's CPUs
    assert (conf.resources.tasks_per_node, conf.resources.cpus_per_task) == (2, 1)
    # the variables with shell syntax are exported as Mantik writes them
    assert 'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)i' in (
        conf.environment.pre_commands
    )
    assert conf.environment.variables["MASTER_PORT"] == "29555"


@pytest.mark.slow
def test_rendered_job_expands_as_mantiks_on_the_compute_node(tmp_path: Path, slurm: Any) -> None:  # noqa: F811
    """The rendered script, run by the local Slurm: $USER expands in the image and options, the
    user's MASTER_ADDR (with its quotes) and MASTER_PORT reach every task, as do their 2 tasks."""
    import getpass

    from maelstrom_run.backends.script import Target, render_batch_script

    conf, _ = _faithful_conf(tmp_path)
    run_dir, record, bin_dir = tmp_path / "run", tmp_path / "record", tmp_path / "bin"
    for d in (run_dir, record, bin_dir):
        d.mkdir()
    (bin_dir / "apptainer").write_text(FAKE_APPTAINER)
    (bin_dir / "apptainer").chmod(0o755)
    script = tmp_path / "job.sbatch"
    script.write_text(
        render_batch_script(
            conf,
            job_name="mantik-faithful",
            target=Target(run_dir=str(run_dir)),
            output=str(run_dir / "slurm-%j.out"),
            code_dir=str(tmp_path),
            python="python",
        )
    )
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "RECORD": str(record),
        "USER": getpass.getuser(),
    }
    job = subprocess.run(
        ["sbatch", "--parsable", "--export=ALL", str(script)], env=env, capture_output=True, text=True
    )
    assert job.returncode == 0, job.stderr
    job_id = job.stdout.strip().split(";")[0]
    slurm.submitted.append(job_id)
    assert slurm.wait(job_id)[job_id] == "COMPLETED", (run_dir / "stderr.log").read_text()
    tasks = [json.loads(p.read_text()) for p in sorted(record.glob("task-*.json"))]
    assert len(tasks) == 2
    user = getpass.getuser()
    node = subprocess.run(["sinfo", "-h", "-o", "%N"], capture_output=True, text=True).stdout.split()[0]
    for rank, task in enumerate(tasks):
        assert task["args"][:4] == [
            "exec",
            "--nv",
            "-B",
            f"{tmp_path}/homes/{user}/data:/data",
        ]
        assert task["args"][4] == f"{tmp_path}/images/{user}/image.sif"
        assert task["args"][5:] == ["python", "-m", "maelstrom_run.worker", f"{run_dir}/spec.yaml"]
        assert task["MASTER_ADDR"] == f"{node}i"  # the quotes were shell syntax, as in Mantik's job
        assert task["MASTER_PORT"] == "29555"
        assert task["SLURM_NTASKS_PER_NODE"] == "2" and task["WORLD_SIZE"] == "2"
        assert task["RANK"] == str(rank)
        assert task["GREETING"] == "two words"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"Environment": {"PreRunCommandOnComputeNode": 42}},
            r"Environment.PreRunCommandOnComputeNode: expected a shell command",
        ),
        (
            {"Environment": {"PostRunCommandOnLoginNode": ["echo", 3]}},
            r"Environment.PostRunCommandOnLoginNode: expected a shell command",
        ),
        (
            {"Environment": {"PreRunCommand": {"Command": 1.5}}},
            r"Environment.PreRunCommand.Command: expected a shell command",
        ),
        ({"Resources": {"Runtime": -3600}}, r"Resources.Runtime: -3600 is not a run time"),
        ({"Resources": {"Runtime": "-1h"}}, r"Resources.Runtime: '-1h' is not a run time"),
        ({"Resources": {"MemoryPerNode": "lots"}}, r"Resources.MemoryPerNode: expected a memory size"),
        ({"Resources": {"MemoryPerNode": True}}, r"Resources.MemoryPerNode: expected a memory size"),
    ],
)
def test_wrong_types_named_by_key_path(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=rf"^cfg.yaml: {message}"):
        mantik.to_backend({"UnicoreApiUrl": "u", **section}, "x", "cfg.yaml")


@pytest.mark.parametrize(
    ("memory", "slurm_mem"), [("16G", "16G"), ("512M", "512M"), (4096, "4096M"), ("2 GiB", "2G")]
)
def test_memory_forms(memory: Any, slurm_mem: str) -> None:
    backend, _ = mantik.to_backend({"UnicoreApiUrl": "u", "Resources": {"MemoryPerNode": memory}}, "x", "c")
    assert backend["resources"]["memory"] == slurm_mem


def test_placeholder_that_is_no_parameter_is_refused_as_mlflow_run_fails(tmp_path: Path) -> None:
    command_text = "python main.py {prnt}"
    data = {
        "name": "p",
        "entry_points": {"main": {"command": command_text, "parameters": {"print": "string"}}},
    }
    with pytest.raises(
        ConfigError,
        match=r"^MLproject: entry_points.main.command: placeholder \{prnt\} is not a parameter; did you mean 'print'\?",
    ):
        mlproject.to_app(data, "main", "p", "MLproject")
    # the oracle: mlflow run fails on the same entry point
    project_spec = pytest.importorskip("mlflow.projects._project_spec")
    entry = project_spec.EntryPoint("main", {"print": {"type": "string", "default": "x"}}, command_text)
    with pytest.raises(KeyError):
        entry.compute_command({}, str(tmp_path))
    positional = {"name": "p", "entry_points": {"main": {"command": "echo {}"}}}
    with pytest.raises(ConfigError, match=r"placeholder \{\} has no name"):
        mlproject.to_app(positional, "main", "p", "MLproject")


def test_tabs_in_yaml_name_file_line_and_column(tmp_path: Path) -> None:
    project = tmp_path / "MLproject"
    project.write_text("name: tabs\nentry_points:\n  main:\n\tcommand: python main.py\n")
    with pytest.raises(
        ConfigError, match=rf"^{project}: not valid YAML \(line 4, column 1\): .*tab in the indentation"
    ):
        mlproject.load(project)
    config = tmp_path / "compute-backend-config.yaml"
    config.write_text("UnicoreApiUrl: https://x\nResources:\n  Queue: batch\n\tNodes: 2\n")
    with pytest.raises(ConfigError, match=rf"^{config}: not valid YAML \(line 4, column 1\)"):
        mantik.read_config(config)


def test_all_entry_points_each_an_app(tmp_path: Path, run_cli: Any, cli_env: dict[str, str]) -> None:
    project = _project(tmp_path, "tweets")
    out = tmp_path / "conf"
    result = _import(run_cli, cli_env, tmp_path, project, "--all-entry-points", "--out", out)
    assert result.returncode == 0, result.stderr
    data = mlproject.load(project / "MLproject")
    for point in data["entry_points"]:
        app = _load(out / "app" / f"ap2-tweets-{point}.yaml")["app"]
        assert app["name"] == f"ap2-tweets-{point}"
        assert app["command"] == data["entry_points"][point]["command"]
    assert "also there" not in result.stderr
    # without it and without a main entry point: the entry points are listed
    (project / "MLproject").write_text((project / "MLproject").read_text().replace("  main:", "  fit:", 1))
    missing = _import(run_cli, cli_env, tmp_path, project, "--out", tmp_path / "other")
    assert missing.returncode == 2
    assert "entry point 'main' not found (entry points: fit, evaluate)" in missing.stderr


def test_ssh_section_is_the_slurm_backend_over_ssh(
    tmp_path: Path, run_cli: Any, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MANTIK_SSH_PRIVATE_KEY", raising=False)
    backend, report = mantik.to_backend(mantik.read_config(DATA / "ssh-juwels.yaml"), "booster", "c")
    assert report.unknown == []
    assert backend["kind"] == "slurm" and "credentials" not in backend
    assert backend["ssh"] == {
        "host": "juwels-booster.fz-juelich.de",
        "port": 2222,
        "user": "${secret:env:MANTIK_SSH_USERNAME}",
    }
    assert backend["environment"]["login_pre_commands"] == ['echo "submitting from $(hostname)"']
    # 4 tasks per node (the user's SLURM_NTASKS_PER_NODE), the node's 48 CPUs shared among them
    assert (backend["resources"]["tasks_per_node"], backend["resources"]["cpus_per_task"]) == (4, 12)
    monkeypatch.setenv("MANTIK_SSH_PRIVATE_KEY", "a key")
    backend, _ = mantik.to_backend(mantik.read_config(DATA / "ssh-juwels.yaml"), "booster", "c")
    assert backend["ssh"]["private_key"] == "${secret:env:MANTIK_SSH_PRIVATE_KEY}"
    with pytest.raises(ConfigError, match=r"^c: SSH.Port: expected a port number"):
        mantik.to_backend({"SSH": {"Hostname": "h", "Port": 70000}}, "x", "c")
    with pytest.raises(ConfigError, match=r"^c: SSH.Hostname: missing"):
        mantik.to_backend({"SSH": {"Port": 22}}, "x", "c")
    # the written backend config composes and validates as a slurm backend with ssh
    project = _project(tmp_path, "wine")
    out = tmp_path / "conf"
    result = _import(run_cli, cli_env, tmp_path, project, DATA / "ssh-juwels.yaml", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "Slurm over SSH backend" in (out / "backend" / "tutorial.yaml").read_text()
    env = {**cli_env, "MANTIK_SSH_USERNAME": "jdoe1"}
    shown = run_cli(
        ["--config-dir", str(out), "app=tutorial", "backend=tutorial", "--cfg", "job", "--resolve"],
        cwd=project,
        env=env,
    )
    assert shown.returncode == 0, shown.stderr
    composed = yaml.safe_load(shown.stdout)["backend"]
    assert composed["ssh"]["host"] == "juwels-booster.fz-juelich.de" and composed["ssh"]["port"] == 2222
    assert "jdoe1" not in shown.stdout  # the user stays a reference
