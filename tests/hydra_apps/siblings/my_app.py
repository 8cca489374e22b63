"""Imports a module of its own directory (run as ``python path/to/my_app.py`` from elsewhere)."""

import helpers
import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None)
def my_app(cfg: DictConfig) -> int:
    return helpers.scale(cfg.value)


if __name__ == "__main__":
    my_app()
