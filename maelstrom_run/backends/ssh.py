"""SSH as a transport: a cluster reached only through its login node (``backend.ssh``).

- :class:`Connection`: the system OpenSSH client, one shared connection per host (ControlMaster,
  kept ``ssh.persist_s`` seconds), ``BatchMode`` (never a prompt) and ``StrictHostKeyChecking=yes``
  (an unknown or changed host key is refused; ``ssh.known_hosts`` names the file that has it). The
  user, key file and key are secret references resolved in memory; a key given as a secret is
  loaded into a private ssh-agent (``ssh-add -`` reads it from a pipe), never written to disk.
  Refusals are one line (:class:`SSHError`): unknown or changed host key, refused key, dead host.
- :class:`Mirror`: the run directories here are the mirror of those on the cluster
  (``ssh.workdir``): what a submission writes is sent as one tar stream over the connection, and
  results, logs and downloads come back with ``rsync`` (only what is asked for).
- :class:`SSHFiles`: the cluster's files for ``maelstrom data copy``.

The Slurm commands over this connection are :class:`maelstrom_run.backends.slurm.SlurmSSH`.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import io
import os
import posixpath
import shlex
import subprocess
import tarfile
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from ..config.schema import SSHConf
from ..config.secrets import resolve
from ..core.errors import BackendError
from ..core.retry import GaveUp, RetryPolicy, Transient, first_line
from ..core.transfer import Progress, write_from
from .files import RemoteEntry, RemoteFiles

#: ssh's own exit status for a failure of ssh itself (not of the remote command).
SSH_FAILED = 255
_AGENTS: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
_LOCK = threading.Lock()


def _stop_agents() -> None:
    """The private agents end with the command that started them (their keys with them)."""
    for agent, socket in _AGENTS.values():
        agent.terminate()
        with contextlib.suppress(OSError):
            os.unlink(socket)
    _AGENTS.clear()


atexit.register(_stop_agents)


class SSHError(BackendError):
    """The login node cannot be reached or refuses us (one line, with what to do)."""


class _Unreachable(Transient):
    def __init__(self, error: SSHError) -> None:
        super().__init__(str(error))
        self.error = error


class Connection:
    """Commands on one host over a shared OpenSSH connection."""

    def __init__(self, backend: str, conf: SSHConf, retry: RetryPolicy | None = None) -> None:
        self.backend, self.conf = backend, conf
        self.retry = retry or RetryPolicy(retries=0)
        self._opened = False
        self._home: str | None = None

    @property
    def host(self) -> str:
        return self.conf.host

    def where(self) -> str:
        return f"{self.conf.host}:{self.conf.port}"

    # -- the ssh command line -------------------------------------------------------------------

    def _control_dir(self) -> str:
        """A directory only this user may enter, for the control sockets (their path must be short)."""
        path = os.path.join(tempfile.gettempdir(), f"maelstrom-ssh-{os.getuid()}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
        return path

    def _identity(self) -> str:
        """What a shared connection was opened with (host key file, key, options): a master opened
        with other settings is never reused (it would skip their checks)."""
        conf = self.conf
        key = resolve(conf.private_key) if conf.private_key else ""
        parts = [conf.known_hosts or "", conf.identity_file or "", key, *map(str, conf.options)]
        return hashlib.sha256("\0".join(resolve(p) for p in parts).encode()).hexdigest()[:12]

    def options(self, *, master: bool = False) -> list[str]:
        """ssh's options (everything but the host and the command); ``master``: those of the shared
        connection itself (ssh takes the first value of an option, so they are chosen here)."""
        conf = self.conf
        opts = {
            "BatchMode": "yes",
            "StrictHostKeyChecking": "yes",
            # commands share the master that open() started; without it they connect on their own
            "ControlMaster": "yes" if master else "no",
            "ControlPath": os.path.join(self._control_dir(), f"%C-{self._identity()}"),
            "ConnectTimeout": "10",
            "ServerAliveInterval": "15",
            "ServerAliveCountMax": "4",
            "LogLevel": "ERROR",
        }
        if conf.known_hosts:
            opts["UserKnownHostsFile"] = str(Path(resolve(conf.known_hosts)).expanduser())
        if conf.identity_file:
            opts["IdentityFile"] = str(Path(resolve(conf.identity_file)).expanduser())
            opts["IdentitiesOnly"] = "yes"
        agent = self._agent()
        if agent:
            opts["IdentityAgent"] = agent
        out = ["-p", str(conf.port)]
        if conf.user:
            out += ["-l", resolve(conf.user)]
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        for option in conf.options:
            out += ["-o", str(option)]
        return out

    def command(self, remote: str | None = None) -> list[str]:
        return ["ssh", *self.options(), self.conf.host, *([remote] if remote is not None else [])]

    def rsync_shell(self) -> str:
        """The ``rsync -e`` value: ssh with these options (over the shared connection)."""
        return shlex.join(["ssh", *self.options()])

    def _agent(self) -> str | None:
        """The socket of a private ssh-agent holding ``ssh.private_key``, started once per process."""
        if not self.conf.private_key:
            return None
        key = resolve(self.conf.private_key)
        digest = hashlib.sha256(key.encode()).hexdigest()  # the agent of this key (not of its reference)
        with _LOCK:
            if digest in _AGENTS and _AGENTS[digest][0].poll() is None:
                return _AGENTS[digest][1]
            socket = os.path.join(self._control_dir(), f"agent-{os.getpid()}-{len(_AGENTS)}")
            agent = subprocess.Popen(
                ["ssh-agent", "-D", "-a", socket],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            for _ in range(100):
                if os.path.exists(socket):
                    break
                threading.Event().wait(0.02)
            text = key if key.endswith("\n") else key + "\n"
            added = subprocess.run(
                ["ssh-add", "-q", "-"],
                input=text.encode(),
                env={**os.environ, "SSH_AUTH_SOCK": socket},
                capture_output=True,
                timeout=30,
            )
            if added.returncode != 0:
                agent.kill()
                raise SSHError(
                    f"backend {self.backend}: backend.ssh.private_key is not a usable private key "
                    f"({first_line(added.stderr.decode(errors='replace')) or 'refused by ssh-add'}); "
                    "give the key itself (OpenSSH or PEM, without a passphrase)"
                )
            _AGENTS[digest] = (agent, socket)
            return socket

    # -- connecting -----------------------------------------------------------------------------

    def error(self, text: str, what: str) -> SSHError:
        """ssh's own failure as one line naming what to do."""
        message = " ".join(line.strip() for line in text.strip().splitlines() if line.strip()) or "failed"
        where, known = self.where(), self.conf.known_hosts or "~/.ssh/known_hosts"
        lowered = message.lower()
        if "identification has changed" in lowered or "host key for" in lowered and "has changed" in lowered:
            return SSHError(
                f"backend {self.backend}: the host key of {where} has CHANGED since it was recorded in "
                f"{known}; nothing was sent. Ask the cluster's admins whether it was replaced; if so, "
                f"remove the old one (ssh-keygen -R '[{self.conf.host}]:{self.conf.port}' -f {known})"
            )
        if "host key verification failed" in lowered or "no " in lowered and "host key is known" in lowered:
            return SSHError(
                f"backend {self.backend}: the host key of {where} is not in {known} (unknown host); "
                "nothing was sent. Check its fingerprint with the cluster's documentation, then add it "
                f"(ssh-keyscan -p {self.conf.port} {self.conf.host} >> {known}) or set backend.ssh.known_hosts"
            )
        if "permission denied" in lowered or "too many authentication failures" in lowered:
            user = f"user {resolve(self.conf.user)} " if self.conf.user else ""
            return SSHError(
                f"backend {self.backend}: {where} refused the key of {user}({message}); check "
                "backend.ssh.user and backend.ssh.identity_file (or private_key), and that the public key "
                "is in ~/.ssh/authorized_keys there"
            )
        if "could not resolve hostname" in lowered or "name or service not known" in lowered:
            return SSHError(
                f"backend {self.backend}: {self.conf.host} does not resolve ({message}); check backend.ssh.host"
            )
        if any(
            s in lowered
            for s in (
                "connection refused",
                "timed out",
                "no route to host",
                "network is unreachable",
                "connection closed",
                "connection reset",
            )
        ):
            return SSHError(
                f"backend {self.backend}: {what}: cannot reach {where} ({message}); check backend.ssh.host "
                "and port and that the login node is up, then retry (a sweep cut short continues with "
                "`maelstrom runs resume SWEEP_ID`)"
            )
        return SSHError(f"backend {self.backend}: {what} over ssh to {where} failed: {message}")

    def open(self) -> None:
        """The shared connection up (started once; a new one when it has gone): credentials checked."""
        if self._opened:  # a master that went meanwhile: commands connect on their own
            return
        # one command at a time starts it: a second master on a socket in use would stay in the
        # background as a connection of its own, never ending
        name = hashlib.sha256(
            f"{self.conf.host}:{self.conf.port}:{self.conf.user}:{self._identity()}".encode()
        )
        lock = os.path.join(self._control_dir(), f"{name.hexdigest()[:16]}.lock")
        with open(lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            self._start()
        self._opened = True

    def _start(self) -> None:
        if self._alive():  # one of an earlier command, still persisting
            return

        def attempt() -> None:
            # the master's output goes to a file: it stays in the background (-f) with its stderr open
            with tempfile.TemporaryFile() as log:
                proc = subprocess.run(
                    [
                        "ssh",
                        *self.options(master=True),
                        "-o",
                        f"ControlPersist={max(1, int(self.conf.persist_s))}",
                        "-f",
                        "-N",
                        self.conf.host,
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=log,
                    timeout=60,
                )
                log.seek(0)
                text = log.read().decode(errors="replace")
            if proc.returncode != 0:
                failure = self.error(text, "connecting")
                if "cannot reach" in str(failure):  # a dead or busy host: tried again by the policy
                    raise _Unreachable(failure)
                raise failure  # a refusal: at once

        try:
            self.retry.call(attempt, transient=lambda exc: isinstance(exc, _Unreachable))
        except GaveUp as exc:
            raise exc.last.error from None  # type: ignore[attr-defined]

    def _alive(self) -> bool:
        check = subprocess.run(
            ["ssh", *self.options(), "-O", "check", self.conf.host], capture_output=True, timeout=30
        )
        return check.returncode == 0

    def close(self) -> None:
        """End the shared connection now (it would end by itself after ``ssh.persist_s``)."""
        subprocess.run(
            ["ssh", *self.options(), "-O", "exit", self.conf.host], capture_output=True, timeout=30
        )
        self._opened = False

    def run(
        self, remote: str, *, input: bytes | str | None = None, what: str = "", timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """``remote`` (a shell command line) on the host; ssh's own failures raise :class:`SSHError`."""
        self.open()
        data = input.encode() if isinstance(input, str) else input
        try:
            proc = subprocess.run(
                self.command(remote),
                input=data if data is not None else b"",
                capture_output=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            raise SSHError(
                f"backend {self.backend}: {what or remote} on {self.where()} did not answer in {timeout:.0f} s"
            ) from None
        out = subprocess.CompletedProcess(
            proc.args,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if out.returncode == SSH_FAILED:
            raise self.error(out.stderr, what or remote.split()[0])
        return out

    def home(self) -> str:
        """The home directory on the host (asked once)."""
        if self._home is None:
            proc = self.run('printf %s "$HOME"', what="finding the home directory")
            if proc.returncode != 0 or not proc.stdout.startswith("/"):
                raise SSHError(
                    f"backend {self.backend}: no home directory on {self.where()}: {first_line(proc.stderr)}"
                )
            self._home = proc.stdout
        return self._home


class Mirror:
    """The run directories here mirror those under ``ssh.workdir`` on the cluster.

    A local path below ``root`` (the parent of a run directory: run directories and sweep
    directories are siblings) is the same relative path below the remote directory.
    """

    def __init__(self, ssh: Connection) -> None:
        self.ssh = ssh

    def remote_root(self) -> str:
        workdir = self.ssh.conf.workdir or "maelstrom/runs"
        if workdir.startswith("~/"):
            workdir = workdir[2:]
        return posixpath.normpath(
            workdir if workdir.startswith("/") else posixpath.join(self.ssh.home(), workdir)
        )

    def remote(self, path: str | Path, root: Path) -> str:
        """Where a local path below ``root`` is on the cluster (other paths are unchanged)."""
        relative = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
        if relative.startswith(".."):
            return str(path)
        return posixpath.normpath(posixpath.join(self.remote_root(), relative.replace(os.sep, "/")))

    def send(self, root: Path, paths: Sequence[Path], data: dict[str, bytes] | None = None) -> None:
        """Files and directories below ``root`` (and ``data``: relative path -> content, written in
        their place) to the same places on the cluster, as one tar stream; modes are kept."""
        data = dict(data or {})
        remote = shlex.quote(self.remote_root())
        self.ssh.open()
        # streamed (a large snapshot never sits in memory); the answer goes to a file, so a full
        # pipe on that side cannot block the writing on this one
        with tempfile.TemporaryFile() as answer:
            proc = subprocess.Popen(
                self.ssh.command(f"mkdir -p {remote} && tar -x -m -f - -C {remote}"),
                stdin=subprocess.PIPE,
                stdout=answer,
                stderr=answer,
            )
            assert proc.stdin is not None
            try:
                with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                    for path in paths:
                        relative = os.path.relpath(path, root)
                        tar.add(str(path), arcname=relative, filter=lambda i: None if i.name in data else i)
                    for name, content in data.items():
                        info = tarfile.TarInfo(name)
                        info.size, info.mode = len(content), 0o644
                        tar.addfile(info, io.BytesIO(content))
            except BrokenPipeError:  # the other side ended early: its answer says why
                pass
            finally:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.close()
                status = proc.wait()
            answer.seek(0)
            text = answer.read().decode(errors="replace")
        if status == SSH_FAILED:
            raise self.ssh.error(text, "staging the run")
        if status != 0:
            raise SSHError(
                f"backend {self.ssh.backend}: staging into {self.remote_root()} on {self.ssh.where()} failed: "
                f"{first_line(text) or status}; check backend.ssh.workdir (and the quota there)"
            )

    def fetch(self, root: Path, patterns: Sequence[str], *, exclude: Sequence[str] = ()) -> None:
        """Files matching rsync ``patterns`` (relative to ``root``: ``RUN/result.json``, ``*/slurm/1_0.out``,
        ``RUN/***`` for all of a directory) from the cluster into ``root``; missing ones are no error."""
        if not patterns:
            return
        rules: list[str] = [f"- {e}" for e in exclude]
        for pattern in patterns:
            parts = pattern.strip("/").split("/")
            rules += [f"+ /{'/'.join(parts[:i])}/" for i in range(1, len(parts))]
            rules.append(f"+ /{'/'.join(parts)}")
        rules.append("- *")
        Path(root).mkdir(parents=True, exist_ok=True)
        self.ssh.open()
        source = f"{self.ssh.host}:{self.remote_root()}/"
        proc = subprocess.run(
            ["rsync", "-a", "-m", "-e", self.ssh.rsync_shell(), "--filter=merge -", source, f"{root}/"],
            input="\n".join(dict.fromkeys(rules)) + "\n",
            capture_output=True,
            text=True,
            timeout=600,
        )
        # 23/24: some files were missing or vanished (a job that has not written them yet)
        if proc.returncode not in (0, 23, 24):
            if proc.returncode == SSH_FAILED or "connection" in proc.stderr.lower():
                raise self.ssh.error(proc.stderr, "fetching results")
            raise SSHError(
                f"backend {self.ssh.backend}: fetching from {self.remote_root()} on {self.ssh.where()} failed "
                f"(rsync exit {proc.returncode}: {first_line(proc.stderr)}); is rsync installed there?"
            )


class SSHFiles(RemoteFiles):
    """The cluster's files over the SSH connection (``maelstrom data copy``, downloads)."""

    resumable_download = True
    resumable_upload = True

    def __init__(self, ssh: Connection) -> None:
        self.ssh = ssh

    def walk(self, path: str) -> list[RemoteEntry]:
        q = shlex.quote(path)
        proc = self.ssh.run(f"test -e {q} && find {q} -type f -printf '%s %p\\n'", what=f"listing {path}")
        if proc.returncode != 0:
            raise FileNotFoundError(path)
        out = []
        for line in proc.stdout.splitlines():
            size, _, name = line.partition(" ")
            out.append(RemoteEntry(name, int(size)))
        return sorted(out, key=lambda e: e.path)

    def size(self, path: str) -> int | None:
        proc = self.ssh.run(f"stat -c %s {shlex.quote(path)}", what=f"reading the size of {path}")
        return int(proc.stdout.strip()) if proc.returncode == 0 and proc.stdout.strip().isdigit() else None

    def download(self, path: str, dest: Path, *, offset: int = 0, progress: Progress | None = None) -> None:
        self.ssh.open()
        proc = subprocess.Popen(
            self.ssh.command(f"tail -c +{offset + 1} {shlex.quote(path)}"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            write_from(
                Path(dest), iter(lambda: proc.stdout.read(1 << 20), b""), offset=offset, progress=progress
            )
        finally:
            proc.stdout.close()
            error = proc.stderr.read().decode(errors="replace")
            status = proc.wait()
        if status == SSH_FAILED:
            raise self.ssh.error(error, f"downloading {path}")
        if status != 0:
            raise FileNotFoundError(path)

    def upload(self, source: Path, path: str, *, offset: int = 0, progress: Progress | None = None) -> None:
        q = shlex.quote(path)
        with Path(source).open("rb") as fh:
            fh.seek(offset)
            content = fh.read()
        redirect = ">>" if offset else ">"
        proc = self.ssh.run(
            f"mkdir -p {shlex.quote(posixpath.dirname(path) or '.')} && cat {redirect} {q}",
            input=content,
            what=f"uploading {path}",
            timeout=3600,
        )
        if proc.returncode != 0:
            raise SSHError(f"backend {self.ssh.backend}: uploading {path} failed: {first_line(proc.stderr)}")
        if progress is not None:
            progress(len(content))
