"""An app that fails in a function of its own for one value of the sweep."""

import hydra
from omegaconf import DictConfig


def ratio(a: int, b: int) -> float:
    return a / b


@hydra.main(version_base=None, config_path=None)
def my_app(cfg: DictConfig) -> float:
    return ratio(10, cfg.divisor)


if __name__ == "__main__":
    my_app()
