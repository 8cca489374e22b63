"""A structured config: dataclasses and an enum in the ConfigStore, defined in the script, and an
object of the script's own class made from the config (``_target_: __main__.Connection``)."""

from dataclasses import dataclass, field
from enum import Enum

import hydra
from hydra.core.config_store import ConfigStore
from hydra.utils import instantiate
from omegaconf import DictConfig


class Mode(Enum):
    FAST = 1
    SAFE = 2


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.url = f"{host}:{port}"


@dataclass
class MySQLConfig:
    _target_: str = "__main__.Connection"
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
    connection = instantiate(cfg.db)
    return {"url": connection.url, "mode": cfg.mode.name, "retries": cfg.retries}


if __name__ == "__main__":
    my_app()
