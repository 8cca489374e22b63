"""Config validation, user errors on the command line, the config search path, dry runs, start-up cost."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_module

from maelstrom_run.config import validate
from maelstrom_run.config.compose import resolve_config
from maelstrom_run.core.errors import ConfigError

HEAVY = ("tensorflow", "torch", "mlflow")
ERROR = "maelstrom-run: error: "


@pytest.fixture(scope="module")
def default_config() -> dict[str, Any]:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        return resolve_config(compose("config"))


@pytest.fixture
def config(default_config: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(default_config)


def error_of(config: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        validate(config)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- validate -----------------------------------------------------------------------------


def test_default_config_is_valid(config: dict[str, Any]) -> None:
    assert config["app"]["name"] == "ap1"
    assert validate(config) is None


@pytest.mark.parametrize("overrides", [["app=ap2"], ["app=ap2", "model=ap2_deberta"], ["backend=juwels"]])
def test_shipped_configs_are_valid(overrides: list[str]) -> None:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        config = resolve_config(compose("config", overrides=overrides))
    validate(config)


def test_every_shipped_backend_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("USER", "tester")
    names = sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "backend").glob("*.yaml"))
    assert {"local", "juwels"} <= set(names)
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        for name in names:
            validate(resolve_config(compose("config", overrides=[f"backend={name}"])))


def test_unknown_nested_key(config: dict[str, Any]) -> None:
    config["backend"]["resources"]["nodez"] = 2
    assert error_of(config) == "backend.resources.nodez: unknown key; did you mean 'nodes'?"


def test_unknown_key_without_close_match_lists_valid_keys(config: dict[str, Any]) -> None:
    config["train"]["zzz"] = 1
    assert error_of(config) == (
        "train.zzz: unknown key; valid keys: batch_size, epochs, seed, steps_per_epoch, tier"
    )


def test_unknown_top_level_key(config: dict[str, Any]) -> None:
    config["trian"] = {}
    assert error_of(config) == "trian: unknown key; did you mean 'train'?"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("train", "epochs"), "three", "train.epochs: expected an integer, got 'three'"),
        (("train", "epochs"), True, "train.epochs: expected an integer, got True"),
        (("train", "epochs"), 2.5, "train.epochs: expected an integer, got 2.5"),
        (("model", "learning_rate"), "fast", "model.learning_rate: expected a number, got 'fast'"),
        (("loader", "shuffle"), "yes", "loader.shuffle: expected true/false, got 'yes'"),
        (("loader", "features"), "leadtime", "loader.features: expected a list, got 'leadtime'"),
        (("backend", "exclude"), ["node1", 3], "backend.exclude[1]: expected a string, got 3"),
        (("backend", "resources"), 4, "backend.resources: expected a mapping, got 4"),
        (("loader", "patch_size"), "big", "loader.patch_size: expected an integer | null, got 'big'"),
        (("dataset", "tiers", "tiny", "runs"), "x", "dataset.tiers.tiny.runs: expected an integer, got 'x'"),
        (
            ("backend", "environment", "variables"),
            [],
            "backend.environment.variables: expected a mapping, got []",
        ),
    ],
)
def test_wrong_type(config: dict[str, Any], path: tuple[str, ...], value: Any, expected: str) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert error_of(config) == expected


def test_int_is_accepted_for_a_number(config: dict[str, Any]) -> None:
    config["model"]["learning_rate"] = 1
    validate(config)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("train", "tier"), "huge", "train.tier: 'huge' is not one of 'tiny' | 'small' | 'full'"),
        (
            ("model", "optimizer"),
            "rmsprop",
            "model.optimizer: 'rmsprop' is not one of 'adam' | 'adamw' | 'sgd'",
        ),
        (
            ("backend", "kind"),
            "pbs",
            # an open set (backend packages add kinds through entry points), named as model.arch is
            "backend.kind: unknown value 'pbs'; valid values: firecrest, local, slurm, slurmrest, unicore",
        ),
        (("dataset", "source"), "web", "dataset.source: 'web' is not one of 'sample' | 'files' | 'remote'"),
    ],
)
def test_literal_violation(config: dict[str, Any], path: tuple[str, ...], value: Any, expected: str) -> None:
    config[path[0]][path[1]] = value
    assert error_of(config) == expected


def test_missing_mandatory_value(config: dict[str, Any]) -> None:
    config["app"]["entry"] = "???"
    assert error_of(config) == (
        "app.entry: missing mandatory value; set it in a config file or with app.entry=VALUE"
    )


def test_absent_mandatory_key(config: dict[str, Any]) -> None:
    del config["backend"]["name"]
    assert error_of(config) == (
        "backend.name: missing mandatory value; set it in a config file or with backend.name=VALUE"
    )


def test_missing_value_from_composition() -> None:
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        config = resolve_config(compose("config", overrides=["app.name=???"]))
    assert config["app"]["name"] == "???"
    assert error_of(config).startswith("app.name: missing mandatory value")


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("unett", "model.arch: unknown value 'unett'; did you mean 'unet'?"),
        ("transformr", "model.arch: unknown value 'transformr'; did you mean 'transformer'?"),
        (
            "gpt",
            "model.arch: unknown value 'gpt'; valid values: cnn1d, custom, mlp, regimes, rnn, transformer, unet, wgan",
        ),
    ],
)
def test_unknown_model_arch(config: dict[str, Any], arch: str, expected: str) -> None:
    config["model"]["arch"] = arch
    assert error_of(config) == expected


def test_arch_selects_the_schema(config: dict[str, Any]) -> None:
    config["model"]["heads"] = 4  # a transformer field on a unet
    message = error_of(config)
    assert message.startswith("model.heads: unknown key; valid keys: arch, dropout, filters,")
    config["model"] = {"arch": "transformer", "name": "t", "heads": 4}
    validate(config)


def test_unknown_dataset_kind(config: dict[str, Any]) -> None:
    config["dataset"]["kind"] = "ap9"
    assert error_of(config).startswith("dataset.kind: unknown value 'ap9'")


def test_custom_arch_skips_the_schema(config: dict[str, Any]) -> None:
    config["model"] = {
        "arch": "custom",
        "name": "mine",
        "anything": {"goes": [1, "two"]},
        "learning_rate": "x",
    }
    validate(config)
    config["dataset"] = {"kind": "custom", "whatever": 1}
    validate(config)


def test_group_must_be_a_mapping(config: dict[str, Any]) -> None:
    config["model"] = "ap1_unet"
    assert error_of(config) == "model: expected a mapping (choose one with model=NAME), got 'ap1_unet'"


@pytest.mark.parametrize(
    "path",
    [
        ("train", "steps_per_epoch"),
        ("dataset", "path"),
        ("loader", "patch_size"),
        ("backend", "resources", "memory"),  # (url is no key of a local backend any more)
        ("backend", "workdir"),
        ("backend", "resources", "time"),
        ("backend", "resources", "cpus_per_task"),
        ("backend", "environment", "apptainer", "image"),
        ("tracking", "uri"),
        ("run_name",),
    ],
)
def test_optional_fields_accept_null(config: dict[str, Any], path: tuple[str, ...]) -> None:
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = None
    validate(config)


def test_non_optional_field_rejects_null(config: dict[str, Any]) -> None:
    config["train"]["epochs"] = None
    assert error_of(config) == "train.epochs: expected an integer, got None"


# -- the command line ---------------------------------------------------------------------


def test_cfg_job_shows_overrides_and_backend(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    result = run_cli(["app=ap2", "backend=juwels", "loader.threads=96", "--cfg", "job"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    assert "threads: 96" in result.stdout
    job = yaml.safe_load(result.stdout)
    assert job["app"]["name"] == "ap2"
    assert job["loader"]["threads"] == 96
    assert job["backend"]["name"] == "juwels"
    assert job["backend"]["kind"] == "unicore"
    assert job["backend"]["credentials"]["username"] == "${secret:env:JUDOOR_USER}"
    assert "hydra" not in job


def _assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(ERROR), result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0][len(ERROR) :]


@pytest.mark.parametrize(
    "override, expected",
    [
        ("app=ap7", ["app=ap7: no such option", "available: ap1, ap2"]),
        ("loader.threadz=4", ["loader.threadz: unknown key", "did you mean 'threads'"]),
        ("loader.threads=abc", ["loader.threads: expected an integer, got 'abc'"]),
        ("+backend.resources.nodez=2", ["backend.resources.nodez: unknown key; did you mean 'nodes'?"]),
        ("train.tier=huge", ["train.tier: 'huge' is not one of 'tiny' | 'small' | 'full'"]),
        ("a=[1,2", ["override 'a=[1,2'"]),
        ("backend=juwel", ["backend=juwel: no such option; did you mean 'juwels'?"]),
        ("modl=ap1_unet", ["modl: unknown key; did you mean 'model'?"]),
    ],
)
def test_user_errors_are_one_line(
    run_cli, cli_env: dict[str, str], tmp_path: Path, override: str, expected: list[str]
) -> None:
    result = run_cli([override, "dry_run=true"], tmp_path, cli_env)
    message = _assert_one_line_error(result)
    for part in expected:
        assert part in message, message


def test_exact_message_for_an_added_unknown_key(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["+backend.resources.nodez=2", "dry_run=true"], tmp_path, cli_env)
    assert result.stderr.strip() == ERROR + "backend.resources.nodez: unknown key; did you mean 'nodes'?"


def _user_conf(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_typo_in_a_user_config_file(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    conf = _user_conf(
        tmp_path / "myconf",
        {
            "backend/mybackend.yaml": """\
                defaults: [local, _self_]
                name: mybackend
                resources: {nodez: 2}
            """
        },
    )
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(conf)}
    result = run_cli(["backend=mybackend", "dry_run=true"], tmp_path, env)
    assert _assert_one_line_error(result) == "backend.resources.nodez: unknown key; did you mean 'nodes'?"


# -- the config search path ---------------------------------------------------------------

JUWELS_OVERRIDE = """\
    defaults: [local, _self_]
    name: juwels
    kind: slurm
    max_parallel: 3
    resources: {nodes: 7, queue: mybooster}
"""


def test_maelstrom_config_path_overrides_a_shipped_option(
    run_cli, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import yaml

    conf = _user_conf(tmp_path / "site", {"backend/juwels.yaml": JUWELS_OVERRIDE})
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": f"{tmp_path / 'does-not-exist'}:{conf}"}
    result = run_cli(["backend=juwels", "--cfg", "job"], tmp_path, env, check=True)
    backend = yaml.safe_load(result.stdout)["backend"]
    assert (backend["name"], backend["kind"], backend["max_parallel"]) == ("juwels", "slurm", 3)
    assert backend["resources"]["nodes"] == 7
    assert backend["resources"]["queue"] == "mybooster"
    assert backend["credentials"] == {}
    # the other shipped options are still there
    result = run_cli(["backend=jureca", "--cfg", "job"], tmp_path, env, check=True)
    assert yaml.safe_load(result.stdout)["backend"]["kind"] == "unicore"


def test_first_directory_of_maelstrom_config_path_wins(
    run_cli, cli_env: dict[str, str], tmp_path: Path
) -> None:
    import yaml

    first = _user_conf(tmp_path / "first", {"backend/juwels.yaml": JUWELS_OVERRIDE})
    second = _user_conf(
        tmp_path / "second", {"backend/juwels.yaml": JUWELS_OVERRIDE.replace("nodes: 7", "nodes: 9")}
    )
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": f"{first}:{second}"}
    result = run_cli(["backend=juwels", "--cfg", "job"], tmp_path, env, check=True)
    assert yaml.safe_load(result.stdout)["backend"]["resources"]["nodes"] == 7


def test_config_dir_adds_a_backend_option(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    conf = _user_conf(
        tmp_path / "extra",
        {
            "backend/mycluster.yaml": """\
                defaults: [slurm, _self_]
                name: mycluster
                resources: {nodes: 3, account: proj42}
            """
        },
    )
    result = run_cli(
        ["--config-dir", str(conf), "backend=mycluster", "--cfg", "job"], tmp_path, cli_env, check=True
    )
    backend = yaml.safe_load(result.stdout)["backend"]
    assert (backend["name"], backend["kind"]) == ("mycluster", "slurm")
    assert backend["resources"]["nodes"] == 3
    assert backend["resources"]["account"] == "proj42"
    assert backend["resources"]["cpus_per_task"] == 2  # from the shipped slurm.yaml


def test_toy_project_app_is_found(run_cli, cli_env: dict[str, str], toy_project: Path) -> None:
    import yaml

    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}
    result = run_cli(["app=toy", "--cfg", "job"], toy_project, env, check=True)
    job = yaml.safe_load(result.stdout)
    assert (job["app"]["name"], job["app"]["entry"]) == ("toy", "toyapp:main")
    assert job["dataset"]["kind"] == "ap1"
    assert job["model"]["arch"] == "unet"


def test_compose_api_honours_maelstrom_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # compose API with the primary config given as pkg://maelstrom_run/conf (how the CLI names it)
    from hydra import initialize_config_dir

    conf = _user_conf(tmp_path / "site", {"backend/juwels.yaml": JUWELS_OVERRIDE})
    monkeypatch.setenv("MAELSTROM_CONFIG_PATH", str(conf))
    shipped = Path(__file__).parents[1] / "maelstrom_run" / "conf"
    with initialize_config_dir(str(shipped), version_base="1.3"):
        config = resolve_config(compose("config", overrides=["backend=juwels"]))
    assert config["backend"]["kind"] == "slurm"


def test_compose_module_api_honours_maelstrom_config_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    conf = _user_conf(tmp_path / "site", {"backend/juwels.yaml": JUWELS_OVERRIDE})
    monkeypatch.setenv("MAELSTROM_CONFIG_PATH", str(conf))
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        config = resolve_config(compose("config", overrides=["backend=juwels"]))
    assert config["backend"]["kind"] == "slurm"


PLAIN_APP = """\
    import hydra
    from omegaconf import OmegaConf


    @hydra.main(config_path=".", config_name="config", version_base="1.3")
    def main(cfg):
        print(OmegaConf.to_yaml(cfg))


    if __name__ == "__main__":
        main()
"""


def test_other_hydra_apps_ignore_maelstrom_config_path(cli_env: dict[str, str], tmp_path: Path) -> None:
    import yaml

    app = _user_conf(tmp_path / "plainapp", {"app.py": PLAIN_APP, "config.yaml": "foo: 1\nbar: hello\n"})
    # a MAELSTROM_CONFIG_PATH directory that would shadow the app's config.yaml if it were searched
    conf = _user_conf(
        tmp_path / "site",
        {
            "config.yaml": "maelstrom_marker: 1\ndefaults: [{backend: juwels}]\n",
            "backend/juwels.yaml": JUWELS_OVERRIDE,
        },
    )
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(conf)}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=app, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == {"foo": 1, "bar": "hello"}
    searchpath = subprocess.run(
        [sys.executable, "app.py", "--info", "searchpath"],
        cwd=app,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert searchpath.returncode == 0, searchpath.stderr
    assert str(conf) not in searchpath.stdout
    assert "maelstrom-env" not in searchpath.stdout


# -- dry run ------------------------------------------------------------------------------


def test_dry_run_submits_nothing(
    run_cli, cli_env: dict[str, str], tmp_path: Path, maelstrom_home: Path
) -> None:
    result = run_cli(["app=ap1", "dry_run=true"], tmp_path, cli_env, check=True)
    out = result.stdout
    assert "dry run" in out
    assert "-m maelstrom_run.worker" in out
    assert "spec.yaml" in out
    assert "nothing was submitted" in out
    assert "Traceback" not in result.stderr
    # nothing ran: no job output anywhere under MAELSTROM_HOME
    assert not list(maelstrom_home.rglob("stdout.log"))
    assert not list(maelstrom_home.rglob("result.json"))
    listed = run_cli(["maelstrom", "runs", "list"], tmp_path, cli_env, check=True)
    assert "no runs yet" in listed.stdout


def test_dry_run_leaves_no_registry_row(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    from maelstrom_run.launch.registry import Registry

    run_cli(["app=ap2", "dry_run=true", "train.epochs=1"], tmp_path, cli_env, check=True)
    assert Registry().list(limit=None) == []


def test_dry_run_of_a_sweep_shows_every_job(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    from maelstrom_run.launch.registry import Registry

    result = run_cli(
        ["--multirun", "app=ap1", "model.learning_rate=0.01,0.001", "dry_run=true"],
        tmp_path,
        cli_env,
        check=True,
    )
    # the local backend starts one process per job: each job's command is shown
    assert result.stdout.count("maelstrom_run.worker") == 2
    assert "2 job(s)" in result.stdout and "nothing was submitted" in result.stdout
    assert Registry().list(limit=None) == []


# -- help and start-up cost ---------------------------------------------------------------


def test_help(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    result = run_cli(["--help"], tmp_path, cli_env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "groups" in out.lower()
    for group in ("app", "backend", "train", "model", "loader", "dataset", "tracking"):
        assert re.search(rf"^\s*{group}: \w", out, re.MULTILINE), group
    assert re.search(r"^\s*backend: daint, jureca, juwels, local, slurm, slurmrest, ssh$", out, re.MULTILINE)
    assert re.search(r"^\s*app: ap1, ap2, ap3, ap4, ap5, ap6$", out, re.MULTILINE)


def test_help_lists_user_options(run_cli, cli_env: dict[str, str], tmp_path: Path) -> None:
    conf = _user_conf(
        tmp_path / "site", {"backend/mycluster.yaml": "defaults: [slurm, _self_]\nname: mycluster\n"}
    )
    result = run_cli(["--help"], tmp_path, {**cli_env, "MAELSTROM_CONFIG_PATH": str(conf)}, check=True)
    assert re.search(r"^\s*backend: .*\bmycluster\b", result.stdout, re.MULTILINE)


IMPORT_CHECK = """\
import json, sys
from pathlib import Path
import maelstrom_run.commands.run
from hydra import compose, initialize_config_module
from maelstrom_run.launch.spec import build
with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
    cfg = compose("config", overrides=["app=ap2", "backend=juwels"])
spec = build(cfg, ["app=ap2", "backend=juwels"], code_dir=Path.cwd())
spec.to_yaml()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
print(json.dumps({{"run_id": spec.run_id, "heavy": heavy}}))
"""


def test_cli_compose_and_build_import_no_frameworks(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_CHECK.format(heavy=set(HEAVY))],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["run_id"].startswith("ap2-")
    assert report["heavy"] == []


DRY_RUN_IMPORT_CHECK = """\
import atexit, json, sys
def report():
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {heavy!r})
    print("IMPORTS " + json.dumps(heavy))
atexit.register(report)
sys.argv = ["maelstrom-run", "app=ap1", "dry_run=true"]
from maelstrom_run.commands.run import main as run_main
run_main()
"""


def test_dry_run_imports_no_frameworks(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", DRY_RUN_IMPORT_CHECK.format(heavy=set(HEAVY))],
        cwd=tmp_path,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "nothing was submitted" in result.stdout
    line = next(x for x in result.stdout.splitlines() if x.startswith("IMPORTS "))
    assert json.loads(line[len("IMPORTS ") :]) == []


def test_an_apps_own_sections_are_allowed_when_listed(config: dict[str, Any]) -> None:
    config["augment"] = {"flips": True, "anything": [1, 2]}
    assert "augment: unknown key" in error_of(config) and "app.sections" in error_of(config)
    config["app"]["sections"] = ["augment"]
    validate(config)
    config["augmnt"] = {}
    assert error_of(config).startswith("augmnt: unknown key")
