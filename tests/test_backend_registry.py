"""Backends found by name: the shipped kinds, and a site's own backend package through the
``maelstrom_run.backends`` entry point group (an installed distribution, found by importlib.metadata)."""

from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from maelstrom_run.backends import backend_class, get_backend
from maelstrom_run.backends.local import LocalBackend
from maelstrom_run.backends.slurm import SlurmBackend, SlurmCommands
from maelstrom_run.backends.slurmrest import SlurmRest, SlurmRestBackend
from maelstrom_run.config.schema import LocalConf, SlurmConf
from maelstrom_run.config.validate import typed, validate
from maelstrom_run.core.errors import ConfigError

SITE_BACKEND = '''
from dataclasses import dataclass

from maelstrom_run.backends.local import LocalBackend
from maelstrom_run.config.schema import BackendConf


@dataclass
class PbsConf(BackendConf):
    kind: str = "pbs"
    queue_server: str = "pbs.example.org"


class PbsBackend(LocalBackend):
    """A site's backend (here: runs locally), with a config of its own."""

    Conf = PbsConf
'''


@pytest.fixture
def site_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An installed distribution ``site-pbs`` whose entry point names its backend kind ``pbs``."""
    root = tmp_path / "site"
    root.mkdir()
    (root / "site_pbs.py").write_text(textwrap.dedent(SITE_BACKEND))
    info = root / "site_pbs-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: site-pbs\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[maelstrom_run.backends]\npbs = site_pbs:PbsBackend\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    yield root
    sys.modules.pop("site_pbs", None)


def _config(backend: dict) -> dict:
    from maelstrom_run.config.compose import compose_config

    config = compose_config(["app=ap1"])
    config["backend"] = backend
    return config


def test_shipped_kinds_and_their_typed_configs() -> None:
    local = get_backend({"name": "mine", "kind": "local"})
    assert isinstance(local, LocalBackend) and isinstance(local.conf, LocalConf)
    assert local.conf.max_parallel == 2 and local.conf.resources.nodes == 1  # defaults filled
    slurm = get_backend({"name": "s", "kind": "slurm", "resources": {"time": "1h"}})
    assert isinstance(slurm, SlurmBackend) and isinstance(slurm.transport, SlurmCommands)
    assert isinstance(slurm.conf, SlurmConf) and slurm.conf.resources.time == "1h"
    rest = get_backend({"name": "r", "kind": "slurmrest", "url": "http://127.0.0.1:6820"})
    assert isinstance(rest, SlurmRestBackend) and isinstance(rest.transport, SlurmRest)


def test_a_key_of_another_kind_is_refused_with_the_kinds_keys() -> None:
    with pytest.raises(ConfigError, match="backend.url: unknown key; valid keys: .*max_parallel"):
        typed({"name": "l", "kind": "local", "url": "http://x"}, "backend")
    with pytest.raises(ConfigError, match="backend.max_paralel: unknown key; did you mean 'max_parallel'"):
        get_backend({"name": "l", "kind": "local", "max_paralel": 3})


def test_an_unknown_kind_gets_the_closest_one() -> None:
    with pytest.raises(ConfigError, match="backend.kind: unknown kind 'slurmm'; did you mean 'slurm'"):
        backend_class("slurmm")


def test_a_site_backend_from_an_entry_point(site_package: Path) -> None:
    cls = backend_class("pbs")
    assert cls.__name__ == "PbsBackend" and cls.__module__ == "site_pbs"
    backend = get_backend({"name": "cluster", "kind": "pbs", "queue_server": "pbs.site"})
    assert type(backend.conf).__name__ == "PbsConf" and backend.conf.queue_server == "pbs.site"
    assert backend.conf.max_parallel == 2  # the shared fields, with their defaults
    # the config is validated against the package's schema when composed
    validate(_config({"name": "cluster", "kind": "pbs", "queue_server": "pbs.site"}))
    with pytest.raises(ConfigError, match="backend.queue_servr: unknown key; did you mean 'queue_server'"):
        validate(_config({"name": "cluster", "kind": "pbs", "queue_servr": "x"}))
    # and offered when a kind is mistyped
    with pytest.raises(ConfigError, match="did you mean 'pbs'"):
        validate(_config({"name": "cluster", "kind": "pbss"}))
