"""A callback of the app: writes what it saw into the job's output directory."""

from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn
from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class Marker(Callback):
    def __init__(self, name: str) -> None:
        self.name = name

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        Path(config.hydra.runtime.output_dir, f"{self.name}.start").write_text(f"lr={config.lr}\n")

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        text = f"{job_return.status.name} {job_return.return_value}\n"
        Path(config.hydra.runtime.output_dir, f"{self.name}.end").write_text(text)
