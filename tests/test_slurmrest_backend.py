"""The slurmrest backend against the real slurmrestd of the local Slurm (``scripts/local-slurm.sh``).

The shared contract suite and Hydra's launcher suites through slurmrestd, the job description
(``#SBATCH`` directives as job properties), a sweep through the CLI as one job array, dry runs,
refused and unusable tokens, an unreachable slurmrestd, HTTP 5xx in the middle of a sweep and
``maelstrom runs resume``, jobs Slurm no longer knows, and the time-limit warning reaching the
worker through the job's steps.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from backend_contract import TESTS, BackendContract, wait_all, wait_state
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from slurm_cluster import REST_URL, SlurmCluster, slurm  # noqa: F401  (fixture)
from slurmrest_service import FaultyProxy, faulty_slurmrest, slurm_jwt  # noqa: F401  (fixtures)

from maelstrom_run.backends import get_backend
from maelstrom_run.backends.script import Target, render_batch_script
from maelstrom_run.backends.slurmrest import job_properties
from maelstrom_run.config.resolvers import register as register_resolvers
from maelstrom_run.config.validate import typed
from maelstrom_run.core.errors import ConfigError, UserError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.launch.registry import Registry

pytestmark = pytest.mark.slow

TOKEN = "${secret:env:SLURM_JWT}"
SLURMREST = {
    "name": "slurmrest",
    "kind": "slurmrest",
    "url": REST_URL,
    "max_parallel": 1,
    "resources": {"time": "10m"},
    "credentials": {"token": TOKEN},
}


class TestSlurmRestBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, slurm_jwt: str) -> dict:  # noqa: F811
        return dict(SLURMREST)


# -- Hydra's launcher suites through slurmrestd ------------------------------------------------------

ON_SLURMREST = [
    "hydra.launcher.wait=true",
    "++hydra.launcher.backend={name: slurmrest, kind: slurmrest, url: '" + REST_URL + "', max_parallel: 8, "
    "resources: {time: 10m}, credentials: {token: '" + TOKEN + "'}}",
]


@pytest.fixture
def _hydra_env(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    slurm_jwt: str,  # noqa: F811
) -> None:
    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path_factory.mktemp("maelstrom-home")))
    # as when the launcher plugin is imported (Hydra's fixtures reset resolvers between tests)
    register_resolvers()


@pytest.mark.usefixtures("_hydra_env")
@pytest.mark.parametrize("launcher_name, overrides", [("maelstrom", ON_SLURMREST)], ids=["slurmrest"])
class TestMaelstromLauncherOnSlurmRest(LauncherTestSuite):
    pass


@pytest.mark.usefixtures("_hydra_env")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=maelstrom", *ON_SLURMREST])],
    ids=["slurmrest"],
)
class TestMaelstromLauncherIntegrationOnSlurmRest(IntegrationTestSuite):
    pass


# -- the job description ----------------------------------------------------------------------------


def _script(conf: dict, target: Target | None = None) -> str:
    return render_batch_script(
        typed({"name": "slurmrest", "kind": "slurm", **conf}, "backend"),  # the typed config a backend gets
        job_name="job",
        target=target or Target(run_dir="/scratch/runs/r1"),
        output="/scratch/runs/r1/slurm-%j.out",
        code_dir="/scratch/runs/r1/code",
        python="python",
        steps=True,
    )


def test_directives_become_job_properties() -> None:
    conf = {
        "resources": {
            "queue": "booster",
            "nodes": 2,
            "tasks_per_node": 4,
            "cpus_per_task": 12,
            "gpus_per_node": 4,
            "memory": "64G",
            "time": "1d12h",
            "reservation": "maelstrom",
            "constraint": "a100",
            "qos": "normal",
            "account": "deepacf",
        },
        "sbatch_options": ["--exclusive", "--mail-type=END", "--comment=two words"],
    }
    job = job_properties(_script(conf, Target(map_file="/s/arrays/000.txt", array="0-9%2")))
    assert job == {
        "name": "job",
        "partition": "booster",
        "nodes": 2,
        "tasks_per_node": 4,
        "cpus_per_task": 12,
        "gres": "gpu:4",
        "memory_per_node": "64G",
        "time_limit": "1-12:00:00",
        "reservation": "maelstrom",
        "constraints": "a100",
        "qos": "normal",
        "account": "deepacf",
        "array": "0-9%2",
        "standard_output": "/scratch/runs/r1/slurm-%j.out",
        "requeue": True,
        # slurmrestd cannot address the batch shell (B:): the warning goes to the job's steps
        "signal": "USR1@90",
        "exclusive": "exclusive",
        "mail_type": "END",
        "comment": "two words",
    }


def test_the_worker_runs_as_a_job_step() -> None:
    text = _script({"resources": {}})
    assert "srun --kill-on-bad-exit=1 bash -c" in text and "-m maelstrom_run.worker" in text


@pytest.mark.parametrize("option", ["--no-such-option=1", "-p debug"])
def test_options_without_a_job_property_are_named(option: str) -> None:
    with pytest.raises(ConfigError, match="backend.sbatch_options: .* for (this backend|slurmrest)"):
        job_properties(_script({"resources": {}, "sbatch_options": [option]}))


def test_unsupported_api_version() -> None:
    with pytest.raises(ConfigError, match="backend.api_version: 'v0.0.40' is not supported; use v0.0.38"):
        get_backend({**SLURMREST, "api_version": "v0.0.40"})


# -- end to end through the CLI -------------------------------------------------------------------


@pytest.fixture
def toy_env(
    cli_env: dict[str, str],
    toy_project: Path,
    slurm_jwt: str,  # noqa: F811
) -> dict[str, str]:
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf"), "SLURM_JWT": slurm_jwt}


def test_sweep_is_one_job_array(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    run_cli(
        ["--multirun", "app=toy", "backend=slurmrest", "model.learning_rate=0.01,0.1,0.001"],
        toy_project,
        toy_env,
        check=True,
    )
    records = sorted(Registry().list(limit=None), key=lambda r: r.sweep_index)
    arrays = {r.job_id.split("_")[0] for r in records}
    slurm.submitted.extend(arrays)
    assert len(records) == 3 and len(arrays) == 1, "a sweep is one job array"
    assert [r.job_id.split("_")[1] for r in records] == ["0", "1", "2"]
    assert slurm.jobs_named(records[0].sweep_id) == {arrays.pop(): f"{records[0].sweep_id}.000"}
    share = Path(records[0].run_dir).parent / records[0].sweep_id
    assert (share / "code" / "toyapp.py").exists() and (share / "arrays" / "000.txt").exists()

    watch = run_cli(["maelstrom", "runs", "watch", records[0].sweep_id], toy_project, toy_env, timeout=180)
    assert watch.returncode == 1  # one job diverges
    assert "2 succeeded, 1 failed" in watch.stderr, watch.stderr
    states = {r.sweep_index: r for r in Registry().list(limit=None)}
    assert states[1].state == "failed" and "diverged" in states[1].message
    logs = run_cli(["maelstrom", "runs", "logs", states[1].run_id, "--stderr"], toy_project, toy_env)
    assert "RuntimeError: diverged" in logs.stdout


def test_dry_run_prints_the_payload_and_submits_nothing(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
    slurm_jwt: str,  # noqa: F811
) -> None:
    env = {**toy_env, "APP_TOKEN": "the-secret-value"}
    secret = "+backend.environment.variables.APP_TOKEN=${secret:env:APP_TOKEN}"
    single = run_cli(["app=toy", "backend=slurmrest", secret, "dry_run=true"], toy_project, env, check=True)
    out = single.stdout
    assert '"script": "#!/bin/bash' in out and '"current_working_directory"' in out
    assert '"time_limit": "01:00:00"' in out and '"cpus_per_task": 2' in out
    assert '"APP_TOKEN": "${secret:env:APP_TOKEN}"' in out  # by name, never the value
    assert "the-secret-value" not in out and slurm_jwt not in out
    assert "code/toyapp.py" in out and "spec.yaml" in out and "nothing was submitted" in out
    sweep = run_cli(
        ["-m", "app=toy", "backend=slurmrest", "model.learning_rate=0.1,0.2", "dry_run=true"],
        toy_project,
        toy_env,
        check=True,
    )
    assert sweep.stdout.count('"array": "0-1"') == 1
    assert Registry().list(limit=None) == []
    run_id = single.stdout.split("dry run: ", 1)[1].split()[0]
    sweep_id = sweep.stdout.split("dry run: ", 1)[1].split()[0]
    assert not slurm.jobs_named(run_id) and not slurm.jobs_named(sweep_id)


# -- refused, unusable and unreachable ------------------------------------------------------------------


def _forged(token: str) -> str:
    """The same claims, signed with another key."""
    header, claims, _ = token.split(".")
    return f"{header}.{claims}.{'A' * 43}"


@pytest.mark.parametrize(
    "token, expected",
    [
        ("not-a-token", "backend.credentials.token is not a Slurm token (a JWT)"),
        (_forged, "was refused: Slurm does not accept the token in backend.credentials.token"),
    ],
    ids=["malformed", "wrong-signature"],
)
def test_a_bad_token_is_one_clear_line_and_submits_nothing(
    token: str | Callable[[str], str],
    expected: str,
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
) -> None:
    bad = token(toy_env["SLURM_JWT"]) if callable(token) else token
    result = run_cli(["app=toy", "backend=slurmrest"], toy_project, {**toy_env, "SLURM_JWT": bad})
    assert result.returncode == 2
    assert expected in result.stderr and "nothing was submitted" in result.stderr
    assert "Traceback" not in result.stderr and bad not in result.stderr
    assert Registry().list(limit=None) == []  # the registry as it was
    assert "nothing was submitted or recorded" in result.stderr


def test_an_expired_token_is_refused_before_any_request(
    slurm: SlurmCluster,  # noqa: F811
    backend_spec: Callable[..., RunSpec],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64

    header, claims, signature = slurm.token().split(".")
    payload = json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    payload["exp"] = 1_000_000_000
    claims = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    monkeypatch.setenv("SLURM_JWT", f"{header}.{claims}.{signature}")
    backend = get_backend({**SLURMREST, "url": "http://127.0.0.1:1"})  # nothing may be asked
    spec = backend_spec("ok")
    with pytest.raises(UserError, match="the token in backend.credentials.token expired at 2001-09-0"):
        backend.submit(spec)
    assert not Path(spec.run_dir).exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_slurmrestd_down_is_a_clear_error_after_retries(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    args = [
        "app=toy",
        "backend=slurmrest",
        f"backend.url={url}",
        "backend.retries=3",
        "backend.retry_delay=0",
    ]
    result = run_cli(args, toy_project, toy_env)
    assert result.returncode == 2
    assert "the gateway could not be reached after 3 tries" in result.stderr
    assert "check backend.url" in result.stderr and "Traceback" not in result.stderr
    assert Registry().list(limit=None) == []  # nothing recorded


def test_5xx_in_the_middle_of_a_sweep_then_resume_submits_only_the_rest(
    run_cli,
    toy_env: dict[str, str],
    toy_project: Path,
    slurm: SlurmCluster,  # noqa: F811
    faulty_slurmrest: FaultyProxy,  # noqa: F811
) -> None:
    faulty_slurmrest.fail_submits_from(2)  # the first array is accepted, the second is not
    rates = ",".join(str(0.001 * (i + 1)) for i in range(6))
    args = [
        "-m",
        "app=toy",
        "backend=slurmrest",
        f"backend.url={faulty_slurmrest.url}",
        "backend.max_array_size=2",
        "backend.retry_delay=0",
        f"model.learning_rate={rates}",
        "train.epochs=0",
    ]
    failed = run_cli(args, toy_project, toy_env)
    assert failed.returncode == 2, failed.stderr
    assert "HTTP 500" in failed.stderr and "maelstrom runs resume" in failed.stderr
    registry = Registry()
    records = registry.list(limit=None)
    sweep_id = records[0].sweep_id
    accepted = [r for r in records if r.job_id]
    slurm.submitted.extend({r.job_id.split("_")[0] for r in accepted})
    assert len(records) == 6 and len(accepted) == 2 and faulty_slurmrest.forwarded_submits == 1

    faulty_slurmrest.fail_submits_from(None)
    faulty_slurmrest.unavailable(1)  # one 503 on the way: retried
    resumed = run_cli(["maelstrom", "runs", "resume", sweep_id], toy_project, toy_env, check=True)
    assert "0 job(s) found on the cluster and recorded, 4 submitted now" in resumed.stdout
    job_ids = [r.job_id for r in registry.list(limit=None)]
    arrays = {j.split("_")[0] for j in job_ids}
    slurm.submitted.extend(arrays)
    assert all(job_ids) and len(set(job_ids)) == 6 and len(arrays) == 3
    assert faulty_slurmrest.forwarded_submits == 3, "no part of the sweep was submitted twice"
    assert set(slurm.jobs_named(sweep_id)) == arrays
    watch = run_cli(
        ["maelstrom", "runs", "watch", sweep_id, "--interval", "1"], toy_project, toy_env, timeout=180
    )
    assert "6 succeeded" in watch.stderr, watch.stderr


# -- jobs Slurm no longer knows, requeue ---------------------------------------------------------------


@pytest.fixture
def backend_spec(maelstrom_home: Path) -> Callable[..., RunSpec]:
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from maelstrom_run.launch.spec import build

    def make(entry: str) -> RunSpec:
        GlobalHydra.instance().clear()
        overrides = [f"app.entry=contract_app:{entry}", "tracking.plots=false", "backend=slurmrest"]
        with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        spec = build(cfg, overrides, code_dir=TESTS)
        spec.config["backend"].update(url=REST_URL, resources={"time": "10m"})
        return spec

    return make


def test_a_job_slurm_no_longer_knows_is_unknown(
    maelstrom_home: Path,
    slurm_jwt: str,  # noqa: F811
) -> None:
    backend = get_backend(SLURMREST)
    refs = [
        JobRef("gone", "999999", str(maelstrom_home / "runs" / "gone")),
        JobRef("gone-task", "999998_3", str(maelstrom_home / "runs" / "gone-task")),
    ]
    statuses = backend.status(refs)
    assert (
        statuses["gone"].state == JobState.UNKNOWN
        and "no longer knows job 999999" in statuses["gone"].message
    )
    assert statuses["gone-task"].state == JobState.UNKNOWN
    backend.cancel(refs)  # nothing to cancel: no error


def test_the_time_limit_warning_reaches_the_worker_through_its_step(
    backend_spec: Callable[..., RunSpec],
    slurm: SlurmCluster,  # noqa: F811
    slurm_jwt: str,  # noqa: F811
) -> None:
    spec = backend_spec("checkpointing")
    backend = get_backend(spec.backend)
    job_id = backend.submit(spec)
    slurm.submitted.append(job_id)
    ref = JobRef(spec.run_id, job_id, spec.run_dir)
    wait_state(backend, ref, JobState.RUNNING)
    deadline = time.monotonic() + 60
    while "working" not in backend.logs(ref):
        assert time.monotonic() < deadline, backend.logs(ref, "stderr")
        time.sleep(0.2)
    first = json.loads((Path(spec.run_dir) / "result.json").read_text())["mlflow_run_id"]
    # what slurmctld does at the job's warning time without ``B:``: USR1 to the job's steps only
    slurm.run("scancel", "--signal=USR1", job_id)
    slurm.make_eligible(job_id)
    assert wait_all(backend, [ref], timeout=120) == {spec.run_id: JobState.SUCCEEDED}
    status = backend.status([ref])[spec.run_id]
    assert status.requeues == 1 and status.result.mlflow_run_id == first
    assert "resumed after 1 requeue(s) from epoch 0" in backend.logs(ref)
