"""Composing a config as ``maelstrom-run`` does, and the plain container every later step reads."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from ..core.errors import ConfigError


def resolve_config(cfg: Any) -> dict[str, Any]:
    """Resolve a composed DictConfig into a plain container (without the ``hydra`` node)."""
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    from .resolvers import register

    register()
    if "hydra" in cfg:
        cfg = cfg.copy()
        with open_dict(cfg):
            del cfg["hydra"]
    try:
        container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        # OmegaConf says which exception a resolver raised; the user needs only its message
        msg = re.sub(r"^\w+ raised while resolving interpolation: ", "", str(exc).splitlines()[0])
        msg = msg[1:-1] if len(msg) > 1 and msg[0] == msg[-1] == '"' else msg
        raise ConfigError(f"{key}: {msg}") from None
    assert isinstance(container, dict)
    return container


def compose_config(overrides: Sequence[str]) -> dict[str, Any]:
    """Compose, resolve and validate the config of ``overrides`` as ``maelstrom-run`` would (no run).

    For commands that need a config without running it (preprocessing, data copy, export).
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from .resolvers import register
    from .validate import validate

    register()
    GlobalHydra.instance().clear()
    with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
        config = resolve_config(compose("config", overrides=list(overrides)))
    validate(config)
    return config
