"""Put the directories of ``$MAELSTROM_CONFIG_PATH`` before maelstrom-run's shipped ``conf/``.

Acts only for maelstrom-run itself (its primary config source), never for other Hydra apps.
"""

import os
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: How the shipped conf/ appears as the main config source (file path or package).
_SHIPPED = ("maelstrom_run/conf", "pkg://maelstrom_run.conf")


#: How the shipped conf/ appears as the main config source (file path or package).
_SHIPPED = ("maelstrom_run/conf", "pkg://maelstrom_run.conf")


class MaelstromSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(
            e.provider == "main" and e.path and e.path.rstrip("/").endswith(_SHIPPED)
            for e in search_path.get_path()
        ):
            return
        dirs = [d for d in os.environ.get("MAELSTROM_CONFIG_PATH", "").split(os.pathsep) if d]
        for directory in reversed(dirs):
            search_path.prepend(
                provider="maelstrom-env", path=f"file://{Path(directory).expanduser().absolute()}"
            )
