"""A structured config: dataclasses and an enum in the ConfigStore, defined in the script."""

from dataclasses import dataclass, field
from enum import Enum

import hydra
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig


class Mode(Enum):
    FAST = 1
    SAFE = 2


@dataclass
class MySQLConfig:
    host: str = "localhost"
    port: int = 3306


@dataclass
class Config:
    db: MySQLConfig = field(default_factory=MySQLConfig)
    mode: Mode = Mode.SAFE
    retries: int = 3


cs = ConfigStore.instance()
cs.store(name="config", node=Config)


@hydra.main(version_base=None, config_name="config")
def my_app(cfg: DictConfig) -> dict:
    return {"url": f"{cfg.db.host}:{cfg.db.port}", "mode": cfg.mode.name, "retries": cfg.retries}


if __name__ == "__main__":
    my_app()
