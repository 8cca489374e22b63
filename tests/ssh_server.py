"""A real OpenSSH server on loopback, in front of the local Slurm, as a pytest fixture.

``sshd_server`` (session scope) generates a host key and a user key in a temporary directory,
writes its own ``sshd_config`` (a free port on 127.0.0.1, keys only; as root
``PermitRootLogin prohibit-password``) and starts ``sshd -D -f`` there. The "cluster side" has a
home of its own: ``MAELSTROM_HOME`` of every session is the server's ``remote-home`` (sshd's
``SetEnv``), so the jobs' MLflow store and state are not the submitting side's. Skipped, with the
reason, when Debian's ``openssh-server`` is not installed. Import the fixture from a test module
(``from ssh_server import SSHServer, sshd_server``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> str:
    """A new ed25519 key pair at ``path`` (``path.pub``); returns the public key line."""
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)], check=True
    )
    return path.with_name(path.name + ".pub").read_text().strip()


@dataclass
class SSHServer:
    directory: Path
    port: int
    host_key: str  #: the server's public host key line (``ssh-ed25519 AAAA... host``)
    identity: Path  #: a private key the server accepts
    known_hosts: Path  #: a known_hosts file with the server's key
    workdir: Path  #: where the run directories live on the "cluster"
    remote_home: Path  #: MAELSTROM_HOME of every session

    @property
    def user(self) -> str:
        return getpass.getuser()

    def conf(self, **ssh: object) -> dict[str, object]:
        """The ``ssh`` section of a backend config that reaches this server."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "user": self.user,
            "identity_file": str(self.identity),
            "known_hosts": str(self.known_hosts),
            "workdir": str(self.workdir),
            "persist_s": 30,
            **ssh,
        }


def _wait_for(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited with {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"sshd did not answer on port {port}: {log.read_text()}")


def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                found.append(int(status.parent.name))
    return found


@pytest.fixture(scope="session")
def sshd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    if not os.path.exists(SSHD) or not shutil.which("ssh") or not shutil.which("rsync"):
        pytest.skip(
            "openssh-server, openssh-client and rsync are needed (apt-get install them; .ci/run does)"
        )
    directory = tmp_path_factory.mktemp("sshd")
    host_key = keygen(directory / "host_ed25519")
    user_key = keygen(directory / "user_ed25519")
    (directory / "authorized_keys").write_text(user_key + "\n")
    port = free_port()
    (directory / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key}\n")
    remote_home, workdir = directory / "remote-home", directory / "remote-runs"
    remote_home.mkdir()
    config = directory / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {directory / 'host_ed25519'}",
                f"PidFile {directory / 'sshd.pid'}",
                f"AuthorizedKeysFile {directory / 'authorized_keys'}",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",  # the key files live in a temporary directory
                "UsePAM no",
                "MaxSessions 64",
                "MaxStartups 64",
                f"SetEnv MAELSTROM_HOME={remote_home}",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    log = directory / "sshd.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for(port, proc, log)
        yield SSHServer(
            directory=directory,
            port=port,
            host_key=host_key,
            identity=directory / "user_ed25519",
            known_hosts=directory / "known_hosts",
            workdir=workdir,
            remote_home=remote_home,
        )
    finally:
        # the sessions first (children of the listener): their connections, and so the clients'
        # shared connections (ControlMaster), end with them
        for child in _children(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
