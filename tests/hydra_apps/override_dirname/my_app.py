"""Job directories named after the overrides (``hydra.job.override_dirname``, seed left out)."""

import logging

import hydra
from omegaconf import DictConfig

log = logging.getLogger(__name__)


@hydra.main(version_base=None, config_path="conf", config_name="config")
def my_app(cfg: DictConfig) -> float:
    log.info(f"training with lr={cfg.lr} batch={cfg.batch}")
    return cfg.lr * cfg.batch


if __name__ == "__main__":
    my_app()
