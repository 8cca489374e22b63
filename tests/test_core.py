"""The bottom layer: the one status rule (reconcile), the worker's typed result, the retry policy and
the did-you-mean hint, each checked on its own (no backend, no server)."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
import urllib.error
from email.message import Message
from email.utils import formatdate
from pathlib import Path

import pytest

from maelstrom_run.core.errors import ConfigError, UserError, closest, did_you_mean
from maelstrom_run.core.retry import GaveUp, RetryPolicy, Transient, is_dns_failure, is_transient, retry_after
from maelstrom_run.core.rundir import Result, RunDir
from maelstrom_run.core.states import JobState
from maelstrom_run.core.status import NO_RESULT, reconcile

Q, R, S, F, C, U = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.SUCCEEDED,
    JobState.FAILED,
    JobState.CANCELLED,
    JobState.UNKNOWN,
)


def _run_dir(tmp_path: Path, result: str | None, cancelled: bool = False, requeues: int = 0) -> RunDir:
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    if result is not None:
        rd.write_result(
            Result(
                run_id="r",
                state=JobState(result),
                exit_code=0 if result == "succeeded" else 1,
                error=None if result == "succeeded" else "ValueError: boom",
            )
        )
    if cancelled:
        rd.mark_cancelled()
    for i in range(requeues):
        rd.add_requeue(f"requeue {i}")
    return rd


# native state, the worker's result, cancel marker -> state, and a word the message must hold
TABLE = [
    # the target's word while the worker has not ended
    (Q, None, False, Q, ""),
    (R, None, False, R, ""),
    (R, "running", False, R, ""),
    # the worker's terminal report wins over what the target says afterwards
    (R, "succeeded", False, S, ""),  # an epilogue still running, or revived by a restarted controller
    (F, "succeeded", False, S, ""),  # a time limit hit after the worker had finished
    (C, "succeeded", False, S, ""),  # cancelled after it had finished
    (None, "succeeded", False, S, ""),  # the target forgot the job
    (None, "succeeded", True, S, ""),  # a cancel that came too late
    (R, "failed", False, F, "boom"),
    (None, "failed", False, F, "boom"),
    # success without the worker's report is a failure
    (S, None, False, F, NO_RESULT),
    (S, "running", False, F, NO_RESULT),
    # a failure names the target's reason and the worker's error
    (F, "failed", False, F, "time limit: ValueError: boom"),
    (F, None, False, F, "time limit"),
    # a cancel asked for
    (C, None, False, C, "cancelled"),
    (F, None, True, C, "cancelled"),
    (S, None, True, C, "cancelled"),
    (None, None, True, C, "cancelled"),
    (None, "running", True, C, "cancelled"),
    (R, "cancelled", False, C, "cancelled"),
    (C, "failed", False, C, "cancelled"),  # the target cancelled it, the worker saw the TERM
    (R, "failed", True, C, "cancelled"),  # killed by our cancel, the target still winding down
    # forgotten, and nothing says how it ended
    (None, None, False, U, "forgot"),
    (U, "running", False, U, "forgot"),
]


@pytest.mark.parametrize("native, result, cancelled, expected, word", TABLE)
def test_reconcile_table(
    tmp_path: Path,
    native: JobState | None,
    result: str | None,
    cancelled: bool,
    expected: JobState,
    word: str,
) -> None:
    rd = _run_dir(tmp_path, result, cancelled)
    why = "time limit" if native is F else ""
    status = reconcile(native, rd, why=why, forgotten="the target forgot it", exit_code=7)
    assert status.state is expected
    assert word in status.message
    if result is not None:
        assert status.result is not None and status.result.state is JobState(result)


def test_reconcile_waiting_reason_and_requeues(tmp_path: Path) -> None:
    rd = _run_dir(tmp_path, None, requeues=2)
    status = reconcile(Q, rd.path, waiting="held")
    assert (status.state, status.message, status.requeues) == (Q, "held", 2)
    assert reconcile(R, str(rd.path), waiting="held").message == ""  # only a queued job waits


def test_reconcile_failure_without_reason_names_the_native_state(tmp_path: Path) -> None:
    status = reconcile(F, _run_dir(tmp_path, None), name="Slurm state NODE_FAIL", exit_code=1)
    assert status.message == "Slurm state NODE_FAIL (exit code 1)" and status.exit_code == 1


def test_result_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    rd.result_file.write_text(json.dumps({"state": "succeeded", "metrics": {"loss": 0.5}, "newer": [1, 2]}))
    result = rd.read_result()
    assert result is not None and result.succeeded and result.metrics == {"loss": 0.5}
    rd.write_result(result)
    again = json.loads(rd.result_file.read_text())
    assert again["newer"] == [1, 2] and again["state"] == "succeeded" and "error" not in again


def test_result_of_a_damaged_or_odd_file(tmp_path: Path) -> None:
    rd = RunDir(tmp_path)
    assert rd.read_result() is None
    rd.result_file.write_text("{not json")
    assert rd.read_result() is None
    rd.result_file.write_text(json.dumps({"state": "exploded", "metrics": "nan"}))
    odd = rd.read_result()
    assert odd is not None and odd.state is U and odd.metrics == {}


# -- the retry policy ---------------------------------------------------------------------------


def test_transient_failures_are_retried_then_given_up() -> None:
    waits: list[float] = []
    calls = []

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError("refused")

    with pytest.raises(GaveUp) as gave_up:
        RetryPolicy(retries=3, delay=0.5).call(refused, sleep=waits.append)
    assert len(calls) == 4 and gave_up.value.tries == 4
    assert waits == [0.5, 1.0, 2.0]  # doubling


def test_a_success_after_failures_returns_its_value() -> None:
    answers = iter([Transient("503"), TimeoutError("slow"), "ok"])

    def flaky() -> str:
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    assert RetryPolicy(retries=2, delay=0).call(flaky, sleep=lambda s: None) == "ok"


def test_retry_after_is_honoured_up_to_a_bound() -> None:
    policy = RetryPolicy(delay=1.0, max_wait=60.0)
    assert policy.wait(1, Transient("HTTP 429", retry_after=7.0)) == 7.0
    assert policy.wait(1, Transient("HTTP 503", retry_after=3600.0)) == 60.0
    assert retry_after("12") == 12.0
    soon = retry_after(formatdate(time.time() + 30, usegmt=True))
    assert soon is not None and 20 <= soon <= 31
    assert retry_after("soon") is None and retry_after(None) is None


def test_a_name_that_does_not_resolve_is_never_retried() -> None:
    calls = []

    def lookup() -> None:
        calls.append(1)
        socket.getaddrinfo("no-such-host.invalid", 443)

    with pytest.raises(socket.gaierror):
        RetryPolicy(retries=5, delay=0).call(lookup, sleep=lambda s: None)
    assert calls == [1]


def test_dns_failures_are_found_inside_the_clients_wrappers() -> None:
    import httpx
    import requests

    with pytest.raises(requests.ConnectionError) as by_requests:
        requests.get("http://no-such-host.invalid/", timeout=5)
    with pytest.raises(httpx.ConnectError) as by_httpx:
        httpx.get("http://no-such-host.invalid/", timeout=5)
    for exc in (by_requests.value, by_httpx.value):
        assert is_dns_failure(exc) and not is_transient(exc)


def test_what_is_transient(tmp_path: Path) -> None:
    import httpx
    import requests

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed: nobody listens
    url = f"http://127.0.0.1:{port}/"
    for fetch, errors in (
        (lambda: requests.get(url, timeout=5), requests.RequestException),
        (lambda: httpx.get(url, timeout=5), httpx.HTTPError),
    ):
        with pytest.raises(errors) as refused:
            fetch()
        assert is_transient(refused.value)
    headers = Message()
    assert is_transient(urllib.error.HTTPError(url, 503, "Service Unavailable", headers, None))
    assert is_transient(urllib.error.HTTPError(url, 429, "Too Many Requests", headers, None))
    assert not is_transient(urllib.error.HTTPError(url, 404, "Not Found", headers, None))
    assert is_transient(http.client.RemoteDisconnected("closed"))
    assert not is_transient(ValueError("a bug"))
    assert not is_transient(ConfigError("backend.url: wrong"))


# -- errors ----------------------------------------------------------------------------------------


def test_did_you_mean() -> None:
    assert did_you_mean("nodez", ["nodes", "queue"]) == "; did you mean 'nodes'?"
    assert did_you_mean("zzz", ["b", "a"]) == "; valid keys: a, b"
    assert did_you_mean("zzz", ["b", "a"], noun="kinds") == "; kinds: a, b"
    assert closest("ap9", ["ap1", "ap5"], cutoff=0.5) in ("ap1", "ap5")
    assert issubclass(ConfigError, UserError) and ConfigError("x").exit_code == 2


def test_core_imports_nothing_else_of_the_project() -> None:
    code = (
        "import sys, maelstrom_run.core.errors, maelstrom_run.core.spec, maelstrom_run.core.status, "
        "maelstrom_run.core.retry, maelstrom_run.core.paths\n"
        "print(sorted(m for m in sys.modules if m.startswith('maelstrom_run.') "
        "and not m.startswith('maelstrom_run.core')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
