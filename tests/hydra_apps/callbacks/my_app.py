"""Callbacks: Hydra's own (pickle the job's config and return value, log the return value) and
one of the app's, defined in a sibling module; the job pickles its HydraConfig."""

import pickle

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig


@hydra.main(version_base=None, config_path="conf", config_name="config")
def my_app(cfg: DictConfig) -> dict:
    hydra_cfg = pickle.loads(pickle.dumps(HydraConfig.get()))
    return {"job": hydra_cfg.job.name, "num": hydra_cfg.job.num, "lr": cfg.lr}


if __name__ == "__main__":
    my_app()
