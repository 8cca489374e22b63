"""``${secret:'vault:MOUNT/PATH#KEY'}`` against a real OpenBao server: token, token file, AppRole,
and every failure as one line that names the reference, never a value."""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from vault_server import VaultServer, free_port, start_dev_server, vault_server  # noqa: F401  (fixture)

from maelstrom_run.config import secrets
from maelstrom_run.core.errors import ConfigError
from maelstrom_run.core.spec import RunSpec
from maelstrom_run.launch.spec import build

VAULT_VARS = (
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "VAULT_APPROLE_MOUNT",
    "VAULT_NAMESPACE",
    "VAULT_CACERT",
    "VAULT_SKIP_VERIFY",
)
READ_APP = 'path "secret/data/maelstrom/app/*" { capabilities = ["read"] }'


@pytest.fixture
def value() -> str:
    """A value that must never appear anywhere but in the resolved result."""
    return f"S3CRET-{uuid.uuid4().hex}"


@pytest.fixture
def vault_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No Vault settings from the outside, and a HOME without ``.vault-token``."""
    for name in VAULT_VARS:
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return monkeypatch


@pytest.fixture
def stored(vault_server: VaultServer, value: str) -> str:  # noqa: F811
    """A reference to a KV v2 secret holding ``value``."""
    path = f"maelstrom/app/{uuid.uuid4().hex[:8]}"
    vault_server.put(path, password=value, port=8080)
    return secrets.reference("vault", f"secret/{path}#password")


def error_of(ref: str) -> str:
    with pytest.raises(ConfigError) as info:
        secrets.resolve(ref)
    message = str(info.value)
    assert ref in message
    assert "\n" not in message
    return message


def test_reference_form() -> None:
    ref = secrets.reference("vault", "secret/maelstrom/judoor#password")
    assert ref == "${secret:'vault:secret/maelstrom/judoor#password'}"
    assert secrets.is_reference(ref)


def test_token_from_environment(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    stored: str,
    value: str,
) -> None:
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_TOKEN", vault_server.root_token)
    assert secrets.resolve(stored) == value
    # non-string values come back as text; env and vault references mix in one mapping
    port = stored.replace("#password", "#port")
    vault_env.setenv("MAELSTROM_TEST_USER", "alice")
    mapping = {"user": "${secret:env:MAELSTROM_TEST_USER}", "password": stored, "port": port, "none": None}
    assert secrets.resolve_mapping(mapping) == {"user": "alice", "password": value, "port": "8080"}


def test_token_from_vault_token_file(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    stored: str,
    value: str,
) -> None:
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    token = vault_server.policy_token("read-app", READ_APP)
    (Path.home() / ".vault-token").write_text(token + "\n")
    assert secrets.resolve(stored) == value


def test_approle_login(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    stored: str,
    value: str,
) -> None:
    vault_server.policy_token("read-app", READ_APP)  # registers the policy
    role_id, secret_id = vault_server.approle("maelstrom-tests", ["read-app"])
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_ROLE_ID", role_id)
    vault_env.setenv("VAULT_SECRET_ID", secret_id)
    assert secrets.resolve(stored) == value

    vault_env.setenv("VAULT_SECRET_ID", "not-the-secret-id")
    message = error_of(stored)
    assert "AppRole login" in message and "VAULT_SECRET_ID" in message
    assert "not-the-secret-id" not in message and value not in message


def test_approle_logs_in_again_when_its_token_expired(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    stored: str,
    value: str,
) -> None:
    vault_server.policy_token("read-app", READ_APP)
    role_id, secret_id = vault_server.approle("short-lived", ["read-app"], token_ttl="1s")
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_ROLE_ID", role_id)
    vault_env.setenv("VAULT_SECRET_ID", secret_id)
    assert secrets.resolve(stored) == value
    time.sleep(2.5)  # the cached client's token has expired by now
    assert secrets.resolve(stored) == value


def test_permission_denied(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    value: str,
) -> None:
    vault_server.put("maelstrom/private/db", password=value)
    token = vault_server.policy_token("read-app-only", READ_APP)
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_TOKEN", token)
    ref = secrets.reference("vault", "secret/maelstrom/private/db#password")
    message = error_of(ref)
    assert "permission denied (403)" in message
    assert "secret/data/maelstrom/private/db" in message
    assert value not in message and token not in message


def test_missing_path_and_missing_key(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    stored: str,
    value: str,
) -> None:
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_TOKEN", vault_server.root_token)
    message = error_of(secrets.reference("vault", "secret/maelstrom/app/nosuchsecret#password"))
    assert "no secret secret/maelstrom/app/nosuchsecret" in message and "(404)" in message

    message = error_of(stored.replace("#password", "#passwd"))
    assert "has no key 'passwd' (its keys: password, port)" in message
    assert value not in message


def test_malformed_reference(vault_env: pytest.MonkeyPatch) -> None:
    for what in ("secret/maelstrom/app", "secret#password", "secret/maelstrom/app#"):
        assert "vault:MOUNT/PATH#KEY" in error_of(secrets.reference("vault", what))


def test_server_down(vault_env: pytest.MonkeyPatch, stored: str) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    vault_env.setenv("VAULT_ADDR", addr)
    vault_env.setenv("VAULT_TOKEN", "some-token")
    message = error_of(stored)
    assert f"cannot reach Vault at VAULT_ADDR={addr}" in message
    assert "some-token" not in message


def test_sealed_server(vault_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    server = start_dev_server(tmp_path)
    try:
        server.put("maelstrom/app/x", password="sealed-away")
        server.api("PUT", "sys/seal")
        vault_env.setenv("VAULT_ADDR", server.addr)
        vault_env.setenv("VAULT_TOKEN", server.root_token)
        message = error_of(secrets.reference("vault", "secret/maelstrom/app/x#password"))
        assert f"Vault at {server.addr} is sealed" in message
    finally:
        server.stop()


def test_settings_missing(vault_server: VaultServer, vault_env: pytest.MonkeyPatch, stored: str) -> None:  # noqa: F811
    message = error_of(stored)
    assert "VAULT_ADDR is not set" in message

    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    message = error_of(stored)
    assert "no Vault credentials" in message and "VAULT_TOKEN" in message

    vault_env.setenv("VAULT_TOKEN", vault_server.root_token)
    vault_env.setitem(sys.modules, "hvac", None)  # as if hvac were not installed
    message = error_of(stored)
    assert "need hvac" in message and "pip install" in message


def test_references_stay_references_in_the_run_spec(
    vault_server: VaultServer,  # noqa: F811
    vault_env: pytest.MonkeyPatch,
    maelstrom_home: Path,
    tmp_path: Path,
    stored: str,
    value: str,
) -> None:
    vault_env.setenv("VAULT_ADDR", vault_server.addr)
    vault_env.setenv("VAULT_TOKEN", vault_server.root_token)
    overrides = ["backend=juwels", f"backend.credentials.password={stored}"]
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    spec = build(cfg, overrides, code_dir=tmp_path)
    assert spec.backend["credentials"]["password"] == stored
    text = spec.write(tmp_path / "run").read_text()
    assert stored in text and value not in text
    assert value not in spec.to_yaml()
    assert RunSpec.read(tmp_path / "run").backend["credentials"]["password"] == stored
    # resolved on demand, in memory
    vault_env.setenv("JUDOOR_USER", "alice")
    assert secrets.resolve_mapping(spec.backend["credentials"])["password"] == value
    # and handed to a job through its environment, under a name derived from the reference
    spec.config["backend"]["environment"]["variables"]["DB_PASSWORD"] = stored
    env = secrets.job_environment([spec.config])
    assert env["DB_PASSWORD"] == value
    assert env[secrets.env_name(stored)] == value
    assert all(value not in name for name in env)
