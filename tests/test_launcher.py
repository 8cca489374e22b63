"""Hydra's own launcher conformance suites against ``hydra/launcher=maelstrom`` (local backend)."""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path_factory.mktemp("maelstrom-home")))


@pytest.mark.parametrize("launcher_name, overrides", [("maelstrom", [])])
class TestMaelstromLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=maelstrom"])],
)
class TestMaelstromLauncherIntegration(IntegrationTestSuite):
    pass
