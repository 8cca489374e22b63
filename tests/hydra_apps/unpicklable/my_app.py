"""Returns a value that cannot be pickled (a lock)."""

import threading

import hydra
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path=None)
def my_app(cfg: DictConfig) -> object:
    return threading.Lock()


if __name__ == "__main__":
    my_app()
