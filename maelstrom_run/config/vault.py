"""Read ``${secret:'vault:MOUNT/PATH#KEY'}`` references from a Vault (or OpenBao) KV v2 engine.

The server is ``VAULT_ADDR``; the client logs in with ``VAULT_TOKEN``, else with AppRole
(``VAULT_ROLE_ID`` and ``VAULT_SECRET_ID``, mount ``VAULT_APPROLE_MOUNT``, default ``approle``),
else with the token in ``~/.vault-token`` (written by ``vault login`` / ``bao login``).
``VAULT_NAMESPACE``, ``VAULT_CACERT`` and ``VAULT_SKIP_VERIFY`` are honoured. One client per
process and set of credentials; values are only ever held in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

_clients: dict[tuple[str, ...], Any] = {}


@dataclass(frozen=True)
class Location:
    """Where a reference points: KV v2 mount, path below it, key in the secret's data."""

    mount: str
    path: str
    key: str


def parse(ref: str, what: str) -> Location:
    """``MOUNT/PATH#KEY`` (``what``) of the reference ``ref``."""
    where, sep, key = what.rpartition("#")
    mount, _, path = where.strip("/").partition("/")
    if not sep or not key or not mount or not path:
        raise ConfigError(
            f"secret {ref}: a Vault reference reads vault:MOUNT/PATH#KEY "
            "(e.g. ${secret:'vault:secret/maelstrom/judoor#password'})"
        )
    return Location(mount, path, key)


def read(ref: str, what: str) -> str:
    """The value of ``KEY`` in the KV v2 secret ``MOUNT/PATH`` (``what``); ``ref`` names it in errors."""
    location = parse(ref, what)
    client, addr, approle = _client(ref)
    try:
        data = _read(client, location)
    except _forbidden() as exc:
        if not approle:
            raise _forbidden_error(ref, location, addr) from exc
        # an AppRole token may have expired: log in once more
        _clients.clear()
        client, addr, _ = _client(ref)
        try:
            data = _read(client, location)
        except _forbidden():
            raise _forbidden_error(ref, location, addr) from None
    except Exception as exc:  # noqa: BLE001 - every transport/server error becomes one line
        raise _server_error(ref, location, addr, exc) from None
    if location.key not in data:
        keys = ", ".join(sorted(data)) or "none"
        raise ConfigError(
            f"secret {ref}: the Vault secret {location.mount}/{location.path} has no key "
            f"{location.key!r} (its keys: {keys})"
        )
    value = data[location.key]
    return value if isinstance(value, str) else str(value)


def _read(client: Any, location: Location) -> dict[str, Any]:
    response = client.secrets.kv.v2.read_secret_version(
        path=location.path, mount_point=location.mount, raise_on_deleted_version=True
    )
    return dict(response["data"]["data"] or {})


def _forbidden() -> type[Exception]:
    import hvac.exceptions

    return hvac.exceptions.Forbidden


def _forbidden_error(ref: str, location: Location, addr: str) -> ConfigError:
    return ConfigError(
        f"secret {ref}: permission denied (403) reading {location.mount}/{location.path} from Vault at "
        f"{addr}; the token's policies must allow 'read' on {location.mount}/data/{location.path}"
    )


def _server_error(ref: str, location: Location, addr: str, exc: Exception) -> ConfigError:
    import hvac.exceptions
    import requests

    where = f"{location.mount}/{location.path}"
    if isinstance(exc, hvac.exceptions.InvalidPath):
        return ConfigError(
            f"secret {ref}: no secret {where} in Vault at {addr} (404); check the path, "
            f"that {location.mount!r} is a KV v2 mount, and that the secret is not deleted"
        )
    if isinstance(exc, hvac.exceptions.VaultDown):
        return ConfigError(f"secret {ref}: Vault at {addr} is sealed; unseal it and retry")
    if isinstance(exc, hvac.exceptions.Unauthorized):
        return ConfigError(f"secret {ref}: Vault at {addr} rejected the token (401); log in again")
    if isinstance(exc, requests.exceptions.RequestException):
        return _unreachable(ref, addr, exc)
    if isinstance(exc, hvac.exceptions.VaultError):
        return ConfigError(f"secret {ref}: Vault at {addr} failed to read {where}: {type(exc).__name__}")
    return ConfigError(f"secret {ref}: cannot read {where} from Vault at {addr}: {type(exc).__name__}")


def _unreachable(ref: str, addr: str, exc: Exception) -> ConfigError:
    return ConfigError(
        f"secret {ref}: cannot reach Vault at VAULT_ADDR={addr} ({type(exc).__name__}); "
        "check that the server runs and VAULT_ADDR is right"
    )


def _client(ref: str) -> tuple[Any, str, bool]:
    """``(client, address, logged in through AppRole)`` for the current environment (cached)."""
    addr = os.environ.get("VAULT_ADDR", "").strip()
    if not addr:
        raise ConfigError(
            f"secret {ref}: VAULT_ADDR is not set; export VAULT_ADDR=https://<vault host>:8200 and "
            "VAULT_TOKEN (or VAULT_ROLE_ID and VAULT_SECRET_ID)"
        )
    try:
        import hvac
    except ImportError:
        raise ConfigError(
            f"secret {ref}: Vault references need hvac; pip install 'maelstrom-run[hpc]'"
        ) from None
    token = os.environ.get("VAULT_TOKEN", "").strip()
    role_id = os.environ.get("VAULT_ROLE_ID", "").strip()
    secret_id = os.environ.get("VAULT_SECRET_ID", "").strip()
    approle_mount = os.environ.get("VAULT_APPROLE_MOUNT", "approle").strip() or "approle"
    token_file = Path("~/.vault-token").expanduser()
    approle = not token and bool(role_id and secret_id)
    if not token and not approle:
        try:
            token = token_file.read_text().strip()
        except OSError:
            token = ""
    if not token and not approle:
        raise ConfigError(
            f"secret {ref}: no Vault credentials; export VAULT_TOKEN (or log in, which writes "
            f"{token_file}), or VAULT_ROLE_ID and VAULT_SECRET_ID for AppRole"
        )
    namespace = os.environ.get("VAULT_NAMESPACE") or None
    verify: bool | str = os.environ.get("VAULT_CACERT") or True
    if os.environ.get("VAULT_SKIP_VERIFY", "").lower() in ("1", "true", "yes"):
        verify = False
    key = (addr, namespace or "", str(verify), token, role_id, secret_id, approle_mount)
    client = _clients.get(key)
    if client is None:
        client = hvac.Client(url=addr, token=token or None, namespace=namespace, verify=verify, timeout=10)
        if approle:
            try:
                client.auth.approle.login(role_id=role_id, secret_id=secret_id, mount_point=approle_mount)
            except hvac.exceptions.VaultError as exc:
                raise ConfigError(
                    f"secret {ref}: AppRole login at {addr} (mount {approle_mount!r}) failed "
                    f"({type(exc).__name__}); check VAULT_ROLE_ID and VAULT_SECRET_ID"
                ) from None
            except Exception as exc:  # noqa: BLE001 - transport errors
                raise _unreachable(ref, addr, exc) from None
        _clients[key] = client
    return client, addr, approle
