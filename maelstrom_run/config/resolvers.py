"""OmegaConf resolvers of maelstrom-run (registered once, idempotently)."""

from __future__ import annotations

from omegaconf import OmegaConf

from ..core import paths
from . import secrets


def register() -> None:
    if not OmegaConf.has_resolver("secret"):
        OmegaConf.register_new_resolver("secret", secrets.reference)
    if not OmegaConf.has_resolver("maelstrom_home"):
        OmegaConf.register_new_resolver("maelstrom_home", lambda: str(paths.home()))
