"""``hydra/launcher=maelstrom``: a sweep becomes one ``submit_many`` on a maelstrom-run backend.

Options (``hydra.launcher.*``):

- ``wait``: true blocks until every job ends and returns the real job results, as Hydra and
  its optimisation sweepers expect; false returns right after submission, each job's result
  being its submission record (run id, job id, backend, run dir). Unset (the default): true
  on the local backend, false on clusters (follow with ``maelstrom runs watch SWEEP_ID``).
- ``backend``: the backend for Hydra apps that are not maelstrom-run apps (maelstrom-run
  apps use their own ``backend`` config group).

This module stays light: Hydra imports every plugin at start-up.
"""

from collections.abc import Sequence
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from maelstrom_run.config.resolvers import register

from ._conf import MaelstromLauncherConf

# ``hydra.launcher.backend`` may hold secret references (``${secret:env:NAME}``): Hydra resolves the
# launcher's config before the launcher exists, so the resolvers must be there when the plugin is.
register()


ConfigStore.instance().store(
    group="hydra/launcher", name="maelstrom", node=MaelstromLauncherConf, provider="maelstrom_launcher"
)


class MaelstromLauncher(Launcher):
    def __init__(self, wait: bool | None = None, backend: Any = None) -> None:
        self.wait = wait
        self.backend = backend
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.sweep_id: str | None = None
        self.parent_run: tuple[str, str] | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    @property
    def config_loader(self) -> Any:
        assert self.hydra_context is not None
        return self.hydra_context.config_loader

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        # the plugin is an entry point like the commands: it hands launch/ the terminal reporter
        from maelstrom_run.commands.summaries import SweepReport
        from maelstrom_run.launch.sweep import launch

        return launch(self, job_overrides, initial_job_idx, SweepReport())
