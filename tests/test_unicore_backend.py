"""The UNICORE backend against the UNICORE test server (``tests/unicore_server.py``), driven only through
pyunicore, with the jobs running on the real local Slurm.

The shared contract suite, Hydra's launcher suites through ``hydra/launcher=maelstrom``, the job
description and dry run, refused credentials, an unreachable gateway, an HTTP 500 in the middle of
a sweep and ``maelstrom runs resume``, adopting jobs, a job the gateway forgets, cancel and logs,
and files (walk, download with resume, upload).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from backend_contract import BackendContract, wait_all, wait_state
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)
from unicore_server import UnicoreServer

from maelstrom_run.backends import get_backend
from maelstrom_run.backends.files import LocalFiles
from maelstrom_run.backends.remote import GatewayError
from maelstrom_run.backends.unicore import TAG, resources
from maelstrom_run.config.resolvers import register
from maelstrom_run.config.schema import UnicoreConf
from maelstrom_run.config.validate import typed
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.data.copy import Side, copy
from maelstrom_run.launch.registry import Registry
from maelstrom_run.launch.submit import submit

pytestmark = pytest.mark.slow

USER, PASSWORD, TOKEN = "demouser", "test123", "tok-7d1e"
#: One job at a time on the two-CPU test node (``CPUsPerNode`` 2), so that "queued" means queued.
UNICORE = {
    "name": "unicore",
    "kind": "unicore",
    "max_parallel": 1,
    "retries": 2,
    "retry_delay": 0.1,
    "credentials": {
        "username": "${secret:env:UNICORE_TEST_USER}",
        "password": "${secret:env:UNICORE_TEST_PASSWORD}",
    },
    "resources": {"time": "10m", "cpus_per_task": 2},
    "environment": {"venv": sys.prefix},
    "exclude": [".git/**", ".venv/**", "**/__pycache__/**", "mlruns/**", "outputs/**", "multirun/**"],
}


@pytest.fixture(scope="module")
def unicore(slurm: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UnicoreServer]:  # noqa: F811
    server = UnicoreServer(
        tmp_path_factory.mktemp("unicore-site"),
        users={USER: PASSWORD, "guest": "guest"},
        tokens={TOKEN: USER},
        forbidden={"guest"},
    ).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _site(unicore: UnicoreServer, maelstrom_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNICORE_TEST_USER", USER)
    monkeypatch.setenv("UNICORE_TEST_PASSWORD", PASSWORD)
    monkeypatch.setenv("UNICORE_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("MAELSTROM_TEST_UNICORE_URL", unicore.base)
    # as the launcher plugin does when a process imports it (the Hydra fixtures reset resolvers per test)
    register()


class TestUnicoreBackend(BackendContract):
    @pytest.fixture
    def backend_conf(self, unicore: UnicoreServer) -> dict:
        return {**UNICORE, "url": unicore.base}


def _ref(spec: RunSpec, job_id: str) -> JobRef:
    return JobRef(spec.run_id, job_id, spec.run_dir)


def test_resources_only_what_is_set() -> None:
    def conf(res: dict) -> UnicoreConf:
        return typed(
            {"name": "uc", "kind": "unicore", "url": "https://uc/SITE/rest/core", "resources": res}, "backend"
        )

    assert resources(conf({"nodes": 1, "tasks_per_node": 1})) == {"Nodes": "1"}
    assert resources(conf({"time": "30m", "queue": "dc-gpu"})) == {
        "Queue": "dc-gpu",
        "Runtime": "1800",
        "Nodes": "1",
    }


class TestOnTheSite:
    """Jobs and files of the test site, with the contract suite's specs."""

    make_spec = BackendContract.make_spec

    @pytest.fixture
    def backend_conf(self, unicore: UnicoreServer) -> dict:
        return {**UNICORE, "url": unicore.base}

    # -- the job description ------------------------------------------------------------------

    def test_job_description_has_every_setting(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        full = {
            **backend_conf,
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
            "environment": {
                "modules": ["Stages/2024", "CUDA/12"],
                "venv": "/p/venv",
                "variables": {"OMP_NUM_THREADS": "12", "TOKEN": "${secret:env:UNICORE_TEST_JOB_TOKEN}"},
                "pre_commands": ["echo before"],
                "post_commands": ["echo after"],
                "login_pre_commands": ["mkdir -p out", "echo staged"],
                "login_post_commands": ["echo done"],
            },
        }
        spec = make_spec("ok", index=3)
        spec.config["backend"] = full
        monkeypatch.setenv("UNICORE_TEST_JOB_TOKEN", "s3cr3t-value")
        rendered = get_backend(full).render(spec)
        description = json.loads(rendered.text)
        assert description["Resources"] == {
            "Queue": "booster",
            "Runtime": "129600",
            "Nodes": "2",
            "CPUsPerNode": "48",
            "GPUsPerNode": "4",
            "Memory": "64G",
            "Reservation": "maelstrom",
            "NodeConstraints": "a100",
            "QoS": "normal",
        }
        assert description["Project"] == "deepacf"
        assert description["Name"] == spec.run_id
        assert description["Tags"] == [TAG, spec.run_id, "sweep-contract"]
        assert (description["Stdout"], description["Stderr"]) == ("stdout.log", "stderr.log")
        assert description["User precommand"] == "mkdir -p out && echo staged"
        assert description["RunUserPrecommandOnLoginNode"] == "true"
        assert description["User postcommand"] == "echo done"
        assert description["RunUserPostcommandOnLoginNode"] == "true"
        assert (description["Executable"], description["Arguments"]) == ("bash", ["job.sh"])
        # a secret is named by its reference in the dry run, never given its value
        assert description["Environment"]["OMP_NUM_THREADS"] == "12"
        assert description["Environment"]["TOKEN"] == "${secret:env:UNICORE_TEST_JOB_TOKEN}"
        assert "s3cr3t-value" not in rendered.text
        (script,) = [i for i in description["Imports"] if i["To"] == "job.sh"]
        lines = script["Data"]
        for line in (
            "module load Stages/2024",
            "module load CUDA/12",
            'source "/p/venv"/bin/activate',
            "export OMP_NUM_THREADS=12",
            "echo before",
            "echo after",
            'RUN_DIR="$PWD"',
            "cd code/tests || exit 2",
            # UNICORE gives 48 tasks per node; srun starts 4 of 12 CPUs each
            "export SLURM_NTASKS=8 SLURM_NTASKS_PER_NODE=4 SLURM_CPUS_PER_TASK=12 SRUN_CPUS_PER_TASK=12",
        ):
            assert line in lines, line
        assert not any(line.startswith("#SBATCH") for line in lines)
        assert any("srun --kill-on-bad-exit=1" in x and "python -m maelstrom_run.worker" in x for x in lines)
        assert rendered.files[0] == "spec.yaml" and "code/tests/contract_app.py" in rendered.files
        assert not any(f.startswith("code/.venv/") or "/__pycache__/" in f for f in rendered.files)
        assert rendered.meta["syntax"] == "json"

    def test_a_job_gets_its_secret_and_downloads_without_code(
        self,
        make_spec: Callable[..., RunSpec],
        backend_conf: dict,
        unicore: UnicoreServer,
        tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        env = {
            **backend_conf["environment"],
            "variables": {"JOB_TOKEN": "${secret:env:UC_TOK}"},
            "login_pre_commands": ["echo before > login-pre.txt"],
            "login_post_commands": ['test -s result.json && echo "$JOB_TOKEN" > login-post.txt'],
        }
        conf = {**backend_conf, "environment": env}
        monkeypatch.setenv("UC_TOK", "value-only-the-job-sees")
        spec = make_spec("ok")
        spec.config["backend"] = conf
        backend = get_backend(conf)
        job_id = backend.submit(spec)
        assert unicore.job(job_id).description["Environment"]["JOB_TOKEN"] == "value-only-the-job-sees"
        assert "value-only-the-job-sees" not in backend.render(spec).text
        ref = _ref(spec, job_id)
        assert wait_all(backend, [ref]) == {spec.run_id: JobState.SUCCEEDED}
        assert unicore.job(job_id).status == "SUCCESSFUL" and unicore.job(job_id).exit_code == 0
        # the worker's result reached the local run directory; the job's directory comes back whole
        assert json.loads((Path(spec.run_dir) / "result.json").read_text())["state"] == "succeeded"
        target = backend.download(ref, tmp_path / "download")
        names = {p.name for p in target.iterdir()}
        assert {"job.sh", "spec.yaml", "result.json", "stdout.log", "stderr.log"} <= names
        assert not (target / "code").exists()
        assert f"hello from {spec.run_id}" in backend.logs(ref)
        # the login-node commands ran before and after the job, with its environment
        assert (target / "login-pre.txt").read_text() == "before\n"
        assert (target / "login-post.txt").read_text() == "value-only-the-job-sees\n"

    # -- refused credentials, an unreachable gateway ----------------------------------------------

    def test_forbidden_user_and_bearer_tokens(
        self, backend_conf: dict, unicore: UnicoreServer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        home = str(unicore.storages["HOME"])
        token = {**backend_conf, "credentials": {"token": "${secret:env:UNICORE_TEST_TOKEN}"}}
        assert isinstance(get_backend(token).files().walk(home), list)
        monkeypatch.setenv("UNICORE_TEST_TOKEN", "expired")
        with pytest.raises(GatewayError, match="HTTP 401"):
            get_backend(token).files().walk(home)
        monkeypatch.setenv("UNICORE_TEST_USER", "guest")
        monkeypatch.setenv("UNICORE_TEST_PASSWORD", "guest")
        with pytest.raises(GatewayError, match="HTTP 403"):
            get_backend(backend_conf).files().walk(home)
        with pytest.raises(ConfigError, match="username and password, or token"):
            get_backend({**backend_conf, "credentials": {}}).files().walk(home)

    def test_an_unreachable_gateway_is_retried_then_named(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict
    ) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        url = f"http://127.0.0.1:{port}/TEST-SITE/rest/core"
        spec = make_spec("ok")
        spec.config["backend"] = {**backend_conf, "url": url, "retries": 3, "retry_delay": 0.05}
        registry = Registry()
        with pytest.raises(GatewayError, match="could not be reached after 3 tries") as error:
            submit([spec], wait=False, registry=registry)
        assert "backend.url" in str(error.value) and "nothing was submitted or recorded" in str(error.value)
        assert registry.list(limit=None) == []

    # -- adopt, a job the gateway forgets, cancel and logs ----------------------------------------

    def test_adopt_finds_accepted_jobs_and_removes_unstarted_ones(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, unicore: UnicoreServer
    ) -> None:
        backend = get_backend(backend_conf)
        accepted, unstarted = make_spec("ok", index=0), make_spec("ok", index=1)
        job_id = backend.submit(accepted)  # accepted by the gateway, never recorded
        # created but never started (the submitting process died while uploading)
        created = backend.session.client().new_job(
            {
                "Executable": "true",
                "Tags": [TAG, unstarted.run_id],
                "Name": unstarted.run_id,
                "haveClientStageIn": "true",
            },
            autostart=False,
        )
        assert created.properties["status"] == "READY"
        assert backend.adopt([accepted, unstarted]) == {accepted.run_id: job_id}
        assert created.job_id not in unicore.jobs
        assert wait_all(backend, [_ref(accepted, job_id)]) == {accepted.run_id: JobState.SUCCEEDED}

    def test_a_job_the_gateway_no_longer_knows_is_unknown(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, unicore: UnicoreServer
    ) -> None:
        backend = get_backend(backend_conf)
        spec = make_spec("sleep", seconds=60)
        ref = _ref(spec, backend.submit(spec))
        wait_state(backend, ref, JobState.RUNNING)
        unicore.vanish(ref.job_id)
        backend._statuses.clear()
        status = backend.status([ref])[spec.run_id]
        assert status.state is JobState.UNKNOWN and "no longer knows" in status.message
        with pytest.raises(GatewayError, match="HTTP 404"):
            backend.logs(ref)

    def test_cancel_a_running_job_after_reading_its_output(
        self, make_spec: Callable[..., RunSpec], backend_conf: dict, unicore: UnicoreServer
    ) -> None:
        backend = get_backend(backend_conf)
        spec = make_spec("sleep", seconds=60)
        ref = _ref(spec, backend.submit(spec))
        wait_state(backend, ref, JobState.RUNNING)
        deadline = time.monotonic() + 30
        while "sleeping" not in backend.logs(ref):
            assert time.monotonic() < deadline, "no output from the running job"
            time.sleep(0.2)
        backend.cancel([ref])
        assert wait_all(backend, [ref], timeout=30) == {spec.run_id: JobState.CANCELLED}
        assert unicore.job(ref.job_id).message == "Job aborted."
        assert backend.status([ref])[spec.run_id].message == "cancelled"

    # -- files ------------------------------------------------------------------------------------

    def test_files_walk_download_resume_and_upload(
        self, backend_conf: dict, unicore: UnicoreServer, tmp_path: Path
    ) -> None:
        home = unicore.storages["HOME"]
        (home / "data" / "a").mkdir(parents=True)
        big = os.urandom(3_000_000)
        (home / "data" / "a" / "big.bin").write_bytes(big)
        (home / "data" / "x.txt").write_text("hello\n")
        files = get_backend(backend_conf).files()
        assert files.resumable_download and not files.resumable_upload
        entries = {e.path: e.size for e in files.walk(f"{home}/data")}
        assert entries == {f"{home}/data/a/big.bin": 3_000_000, f"{home}/data/x.txt": 6}
        assert [(e.path, e.size) for e in files.walk(f"{home}/data/x.txt")] == [(f"{home}/data/x.txt", 6)]
        assert files.size(f"{home}/data/x.txt") == 6 and files.size(f"{home}/data/none") is None
        with pytest.raises(FileNotFoundError):
            files.walk(f"{home}/none")
        with pytest.raises(ConfigError, match="none of the gateway's storages"):
            files.walk("/somewhere/else")

        # an interrupted download continues where it stopped (HTTP Range), through the copy command's logic
        local = tmp_path / "local"
        (local / "a").mkdir(parents=True)
        (local / "a" / "big.bin").write_bytes(big[:1_000_000])
        result = copy(Side(f"{home}/data", "uc", files), Side(str(local), None, LocalFiles()), progress=False)
        assert (result.copied, result.resumed, result.nbytes) == (1, 1, 2_000_006)
        assert (local / "a" / "big.bin").read_bytes() == big and (local / "x.txt").read_text() == "hello\n"
        request = ("GET", "/TEST-SITE/rest/core/storages/HOME/files/data/a/big.bin", "bytes=1000000-")
        assert request in unicore.requests
        moved: list[int] = []
        files.download(f"{home}/data/x.txt", tmp_path / "x.txt", progress=moved.append)
        assert (tmp_path / "x.txt").read_text() == "hello\n" and sum(moved) == 6

        # an upload creates the parents and replaces the whole file
        (tmp_path / "up.bin").write_bytes(big[:123_456])
        files.upload(tmp_path / "up.bin", f"{home}/new/dir/up.bin", progress=moved.append)
        assert (home / "new" / "dir" / "up.bin").read_bytes() == big[:123_456]
        assert files.size(f"{home}/new/dir/up.bin") == 123_456 and sum(moved) == 6 + 123_456


# -- through the command line ---------------------------------------------------------------------


@pytest.fixture
def toy_env(cli_env: dict[str, str], toy_project: Path, unicore: UnicoreServer) -> dict[str, str]:
    """The toy project, with a backend ``uc`` for the test site (one submission at a time)."""
    (toy_project / "conf" / "backend").mkdir()
    (toy_project / "conf" / "backend" / "uc.yaml").write_text(
        "defaults:\n  - local\n  - _self_\n"
        "name: uc\nkind: unicore\nmax_parallel: 1\nretries: 2\nretry_delay: 0.1\n"
        f"url: {unicore.base}\n"
        "credentials:\n"
        "  username: ${secret:env:UNICORE_TEST_USER}\n"
        "  password: ${secret:env:UNICORE_TEST_PASSWORD}\n"
        "resources: {time: 10m}\n"
        f"environment: {{venv: {sys.prefix}}}\n"
    )
    return {**cli_env, "MAELSTROM_CONFIG_PATH": str(toy_project / "conf")}


def test_dry_run_with_the_shipped_juwels_config_submits_nothing(
    run_cli, toy_env: dict[str, str], toy_project: Path, unicore: UnicoreServer
) -> None:
    env = {k: v for k, v in toy_env.items() if not k.startswith("JUDOOR_")}  # no credentials needed
    seen = len(unicore.requests)
    result = run_cli(
        ["app=toy", "backend=juwels", f"backend.url={unicore.base}", "dry_run=true"],
        toy_project,
        env,
        check=True,
    )
    out = "\n".join(line.rstrip() for line in result.stdout.splitlines())  # rich pads the lines
    description = json.loads(out[out.index("{") : out.index("\n}\n") + 2])
    assert description["Resources"]["Queue"] == "booster" and description["Project"] == "deepacf"
    assert description["Resources"]["CPUsPerNode"] == "48" and description["Resources"]["GPUsPerNode"] == "4"
    assert description["Environment"] == {"CUDA_VISIBLE_DEVICES": "0,1,2,3"}
    script = description["Imports"][0]["Data"]
    assert "module load Stages/2024" in script
    assert 'source "/p/project/deepacf/maelstrom/venvs/maelstrom-run"/bin/activate' in script
    assert "spec.yaml" in out and "code/toyapp.py" in out and "nothing was submitted" in out
    assert len(unicore.requests) == seen, "a dry run does not talk to the gateway"
    assert Registry().list(limit=None) == []


def test_wrong_password_is_refused_and_nothing_is_submitted(
    run_cli, toy_env: dict[str, str], toy_project: Path, unicore: UnicoreServer
) -> None:
    before = unicore.submissions
    bad = run_cli(["app=toy", "backend=uc"], toy_project, {**toy_env, "UNICORE_TEST_PASSWORD": "pw-x7"})
    assert bad.returncode != 0
    assert "HTTP 401" in bad.stderr and "backend.credentials" in bad.stderr
    assert "nothing was submitted" in bad.stderr
    assert "Traceback" not in bad.stderr and "pw-x7" not in bad.stderr + bad.stdout
    assert unicore.submissions == before
    assert Registry().list(limit=None) == []  # the registry as it was


def test_http_500_mid_sweep_then_resume_submits_only_the_rest(
    run_cli, toy_env: dict[str, str], toy_project: Path, unicore: UnicoreServer
) -> None:
    unicore.fail_submission(2)
    cut = run_cli(["-m", "app=toy", "backend=uc", "model.learning_rate=0.01,0.02,0.03"], toy_project, toy_env)
    assert cut.returncode != 0
    assert "HTTP 500" in cut.stderr and "maelstrom runs resume" in cut.stderr
    registry = Registry()
    records = sorted(registry.list(limit=None), key=lambda r: r.sweep_index)
    assert [bool(r.job_id) for r in records] == [True, False, False]
    sweep_id = records[0].sweep_id
    assert _runs_tagged(unicore, sweep_id) == [records[0].run_id]

    resumed = run_cli(["maelstrom", "runs", "resume", sweep_id], toy_project, toy_env, check=True)
    assert "0 job(s) found on the cluster and recorded, 2 submitted now" in resumed.stdout
    records = registry.list(limit=None)
    assert all(r.job_id for r in records) and len({r.job_id for r in records}) == 3
    assert sorted(_runs_tagged(unicore, sweep_id)) == sorted(r.run_id for r in records), "none twice"
    watch = run_cli(
        ["maelstrom", "runs", "watch", sweep_id, "--interval", "1"], toy_project, toy_env, timeout=180
    )
    assert "3 succeeded" in watch.stderr, watch.stderr


def _runs_tagged(server: UnicoreServer, tag: str) -> list[str]:
    """Run ids (job names) of the jobs the server has with this tag, one entry per job."""
    return [str(j.description["Name"]) for j in list(server.jobs.values()) if tag in j.tags]


# -- Hydra's launcher suites ------------------------------------------------------------------------

#: Hydra apps that are not maelstrom-run apps take their backend from ``hydra.launcher.backend``:
#: the URL of the test site from the environment, the credentials as secret references.
ON_UNICORE = [
    "hydra.launcher.wait=true",
    "++hydra.launcher.backend={name: unicore, kind: unicore, max_parallel: 4, retries: 2,"
    " url: '${oc.env:MAELSTROM_TEST_UNICORE_URL}',"
    " credentials: {username: '${secret:env:UNICORE_TEST_USER}',"
    " password: '${secret:env:UNICORE_TEST_PASSWORD}'},"
    f" resources: {{time: 10m}}, environment: {{venv: '{sys.prefix}'}}}}",
]


@pytest.mark.parametrize("launcher_name, overrides", [("maelstrom", ON_UNICORE)], ids=["unicore"])
class TestMaelstromLauncherOnUnicore(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=maelstrom", *ON_UNICORE])],
    ids=["unicore"],
)
class TestMaelstromLauncherIntegrationOnUnicore(IntegrationTestSuite):
    pass
