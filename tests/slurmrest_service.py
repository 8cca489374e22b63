"""slurmrestd of the local cluster for the slurmrest backend's tests, and a proxy in front of it
that fails on demand.

- ``slurm_jwt`` (function scope): a token of the current user from ``scontrol token`` in
  ``SLURM_JWT`` (for this process and the CLI processes it starts); returns it.
- ``faulty_slurmrest``: a :class:`FaultyProxy` on 127.0.0.1 (random port) that forwards every
  request to the real slurmrestd, except those it is told to fail: ``fail_submits_from(n)``
  answers the n-th and later ``job/submit`` requests with HTTP 500 (Slurm never sees them),
  ``unavailable(k)`` answers the next ``k`` requests with HTTP 503 (then forwards again).
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)


@pytest.fixture
def slurm_jwt(slurm: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> str:  # noqa: F811
    token = slurm.token()
    monkeypatch.setenv("SLURM_JWT", token)
    return token


class FaultyProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.submits = 0  #: job/submit requests seen (failed ones included)
        self.forwarded_submits = 0  #: job/submit requests that reached slurmrestd
        self._fail_from: int | None = None
        self._unavailable = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_submits_from(self, n: int | None) -> None:
        """The n-th and later submissions (counted from now) fail with HTTP 500; None: none."""
        with self._lock:
            self._fail_from = None if n is None else self.submits + n

    def unavailable(self, count: int) -> None:
        with self._lock:
            self._unavailable = count

    def start(self) -> FaultyProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, method: str, path: str) -> int | None:
        """The HTTP status to fail this request with, or None to forward it."""
        with self._lock:
            if self._unavailable > 0:
                self._unavailable -= 1
                return 503
            if method == "POST" and path.endswith("/job/submit"):
                self.submits += 1
                if self._fail_from is not None and self.submits >= self._fail_from:
                    return 500
                self.forwarded_submits += 1
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                failure = proxy._decide(self.command, self.path)
                if failure is not None:
                    errors = [{"error": "Unspecified error", "error_number": -1, "source": "proxy"}]
                    self._answer(failure, json.dumps({"errors": errors}).encode(), "application/json")
                    return
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=120
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")
                    }
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    data = response.read()
                    kind = response.getheader("Content-Type") or "application/json"
                    self._answer(response.status, data, kind)
                finally:
                    upstream.close()

            def _answer(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _any

        return Handler


@pytest.fixture
def faulty_slurmrest(slurm: SlurmCluster) -> Iterator[FaultyProxy]:  # noqa: F811
    proxy = FaultyProxy(slurm.rest_url).start()
    yield proxy
    proxy.stop()
