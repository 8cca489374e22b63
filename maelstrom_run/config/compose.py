"""A composed Hydra config as the plain container every later step reads."""

from __future__ import annotations

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
        msg = str(exc).splitlines()[0]
        raise ConfigError(f"{key}: {msg}") from None
    assert isinstance(container, dict)
    return container
