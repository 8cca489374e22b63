"""OmegaConf resolvers of maelstrom-run (registered once, idempotently)."""

from __future__ import annotations

from omegaconf import OmegaConf

from . import secrets


def register() -> None:
    if not OmegaConf.has_resolver("secret"):
        OmegaConf.register_new_resolver("secret", secrets.reference)
