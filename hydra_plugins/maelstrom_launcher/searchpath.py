"""Put the directories of ``$MAELSTROM_CONFIG_PATH`` before maelstrom-run's shipped ``conf/``.

Acts only for maelstrom-run itself (its primary config source), never for other Hydra apps.
"""

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin

#: How the shipped conf/ appears as the main config source (file path or package).
_SHIPPED = ("maelstrom_run/conf", "pkg://maelstrom_run.conf")


class MaelstromSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        if not any(
            e.provider == "main" and e.path and e.path.rstrip("/").endswith(_SHIPPED)
            for e in search_path.get_path()
        ):
            return
        from maelstrom_run.core.paths import user_config_dirs

        for directory in reversed(user_config_dirs()):
            search_path.prepend(provider="maelstrom-env", path=f"file://{directory}")
