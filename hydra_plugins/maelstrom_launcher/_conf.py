"""The config dataclasses of the maelstrom launcher and sweeper (``hydra.launcher``, ``hydra.sweeper``).

They live in a module whose name starts with ``_`` because Hydra's plugin scan skips such modules:
the scan executes every other plugin module again when it is already imported (as unpickling a
job's config imports it), which would rebind these classes, and the ``HydraConfig`` of a job, which
holds them, could no longer be pickled.
"""

from dataclasses import dataclass, field
from typing import Any


@dataclass
class MaelstromLauncherConf:
    _target_: str = "hydra_plugins.maelstrom_launcher.maelstrom_launcher.MaelstromLauncher"
    wait: bool | None = None
    backend: dict[str, Any] = field(
        default_factory=lambda: {"name": "local", "kind": "local", "max_parallel": 2}
    )


@dataclass
class MaelstromSweeperConf:
    _target_: str = "hydra_plugins.maelstrom_launcher.maelstrom_sweeper.MaelstromSweeper"
    max_batch_size: int | None = None
    params: dict[str, str] | None = None
