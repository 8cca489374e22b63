"""Config groups: ``db=mysql,postgresql`` picks one file of ``conf/db``."""

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base=None, config_path="conf", config_name="config")
def my_app(cfg: DictConfig) -> dict:
    print(OmegaConf.to_yaml(cfg))
    return {"driver": cfg.db.driver, "timeout": cfg.db.timeout}


if __name__ == "__main__":
    my_app()
