"""The shared backend contract suite: every backend must pass it.

A backend's test module subclasses :class:`BackendContract` and provides two fixtures:
``backend_conf`` (the backend config group entry as a dict, e.g. ``max_parallel: 1``) and
``make_spec`` is provided here (RunSpecs of ``tests/contract_app.py`` entries).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from maelstrom_run.backends import Backend, get_backend
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.core.states import JobRef, JobState
from maelstrom_run.launch.spec import build

TESTS = Path(__file__).parent


def wait_all(backend: Backend, refs: list[JobRef], timeout: float = 120.0) -> dict[str, JobState]:
    deadline = time.monotonic() + timeout
    while True:
        statuses = backend.status(refs)
        if all(s.state.terminal for s in statuses.values()) or time.monotonic() > deadline:
            return {k: s.state for k, s in statuses.items()}
        time.sleep(0.2)


def wait_state(backend: Backend, ref: JobRef, state: JobState, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while backend.status([ref])[ref.run_id].state != state:
        assert time.monotonic() < deadline, f"{ref.run_id} never reached {state}"
        time.sleep(0.1)


class BackendContract:
    @pytest.fixture
    def make_spec(
        self, backend_conf: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Callable[..., RunSpec]:
        monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path / "home"))
        monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

        def make(entry: str = "ok", seconds: int = 0, index: int | None = None) -> RunSpec:
            GlobalHydra.instance().clear()
            overrides = [f"app.entry=contract_app:{entry}", f"train.epochs={seconds}", "tracking.plots=false"]
            with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
                cfg = compose("config", overrides=overrides)
            spec = build(cfg, overrides, code_dir=TESTS)
            spec.config["backend"] = dict(backend_conf)
            if index is not None:
                spec.sweep_id, spec.sweep_index = "sweep-contract", index
            return spec

        return make

    @pytest.fixture
    def backend(self, backend_conf: dict) -> Backend:
        return get_backend(backend_conf)

    @staticmethod
    def ref(spec: RunSpec, job_id: str) -> JobRef:
        return JobRef(spec.run_id, job_id, spec.run_dir)

    def test_render_is_pure_and_names_the_worker(
        self, backend: Backend, make_spec: Callable[..., RunSpec]
    ) -> None:
        spec = make_spec()
        first, second = backend.render(spec), backend.render(spec)
        assert first.text == second.text and first.files == second.files
        assert "maelstrom_run.worker" in first.text
        assert any(f.endswith("spec.yaml") for f in first.files)
        assert not Path(spec.run_dir).exists(), "render must not stage anything"

    def test_submit_runs_to_success(self, backend: Backend, make_spec: Callable[..., RunSpec]) -> None:
        spec = make_spec("ok")
        ref = self.ref(spec, backend.submit(spec))
        assert wait_all(backend, [ref]) == {spec.run_id: JobState.SUCCEEDED}
        status = backend.status([ref])[spec.run_id]
        assert status.result and status.result.mlflow_run_id and status.result.metrics["loss"] == 0.25
        assert f"hello from {spec.run_id}" in backend.logs(ref, "stdout")

    def test_failure_is_reported(self, backend: Backend, make_spec: Callable[..., RunSpec]) -> None:
        spec = make_spec("fail")
        ref = self.ref(spec, backend.submit(spec))
        assert wait_all(backend, [ref]) == {spec.run_id: JobState.FAILED}
        status = backend.status([ref])[spec.run_id]
        assert status.exit_code not in (None, 0)
        assert "contract app failed on purpose" in status.message
        assert "RuntimeError: contract app failed on purpose" in backend.logs(ref, "stderr")
        assert "about to fail" in backend.logs(ref, "stdout")

    def test_submit_many_respects_max_parallel(
        self, backend: Backend, make_spec: Callable[..., RunSpec], backend_conf: dict
    ) -> None:
        specs = [make_spec("sleep", seconds=1, index=i) for i in range(3)]
        ids = backend.submit_many(specs)
        assert len(ids) == len(set(ids)) == 3
        refs = [self.ref(s, j) for s, j in zip(specs, ids, strict=True)]
        states = wait_all(backend, refs)
        assert set(states.values()) == {JobState.SUCCEEDED}, states
        spans = sorted(
            (
                backend.status([r])[r.run_id].result.metrics["started"],
                backend.status([r])[r.run_id].result.metrics["ended"],
            )
            for r in refs
        )
        overlapping = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
        assert overlapping <= backend_conf["max_parallel"]

    def test_cancel_running_and_queued(self, backend: Backend, make_spec: Callable[..., RunSpec]) -> None:
        running, queued = make_spec("sleep", seconds=60, index=0), make_spec("ok", index=1)
        ids = backend.submit_many([running, queued])
        refs = [self.ref(running, ids[0]), self.ref(queued, ids[1])]
        wait_state(backend, refs[0], JobState.RUNNING)
        started = time.monotonic()
        backend.cancel(refs)
        states = wait_all(backend, refs, timeout=30)
        assert states == {running.run_id: JobState.CANCELLED, queued.run_id: JobState.CANCELLED}
        assert time.monotonic() - started < 20
        assert "hello" not in backend.logs(refs[1], "stdout")

    def test_cancel_finished_job_is_a_no_op(
        self, backend: Backend, make_spec: Callable[..., RunSpec]
    ) -> None:
        spec = make_spec("ok")
        ref = self.ref(spec, backend.submit(spec))
        wait_all(backend, [ref])
        backend.cancel([ref])
        assert backend.status([ref])[spec.run_id].state == JobState.SUCCEEDED

    def test_download_copies_the_run_directory(
        self, backend: Backend, make_spec: Callable[..., RunSpec], tmp_path: Path
    ) -> None:
        spec = make_spec("ok")
        ref = self.ref(spec, backend.submit(spec))
        wait_all(backend, [ref])
        target = backend.download(ref, tmp_path / "download")
        assert (target / "spec.yaml").exists() and (target / "result.json").exists()
        assert f"hello from {spec.run_id}" in (target / "stdout.log").read_text()
