"""``hydra/sweeper=maelstrom``: Hydra's basic sweeper (cartesian products, ``range()``, batches),
minus its up-front composition of every job when the maelstrom launcher runs the sweep.

The basic sweeper composes each job's config once to check it, and the launcher then composes
it again: for a 1,000-job sweep that is most of the submission time. The maelstrom launcher
composes and validates every job of a batch before it submits any, so the check is left to it;
with any other launcher this sweeper is exactly the basic one.

This module stays light: Hydra imports every plugin at start-up.
"""

from collections.abc import Sequence

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.config_store import ConfigStore

from ._conf import MaelstromSweeperConf
from .maelstrom_launcher import MaelstromLauncher

ConfigStore.instance().store(
    group="hydra/sweeper", name="maelstrom", node=MaelstromSweeperConf, provider="maelstrom_launcher"
)


class MaelstromSweeper(BasicSweeper):
    def validate_batch_is_legal(self, batch: Sequence[Sequence[str]]) -> None:
        if isinstance(self.launcher, MaelstromLauncher):
            return  # the launcher validates every job before submitting any
        super().validate_batch_is_legal(batch)
