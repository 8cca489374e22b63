"""Hydra's own launcher conformance suites against ``hydra/launcher=maelstrom``, on the local
backend and on the local Slurm (``scripts/local-slurm.sh``)."""

from __future__ import annotations

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite
from slurm_cluster import SlurmCluster, slurm  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow

#: Hydra apps that are not maelstrom-run apps take their backend from ``hydra.launcher.backend``;
#: the suites read job results, so they wait (clusters default to returning at once).
ON_SLURM = [
    "hydra.launcher.wait=true",
    "++hydra.launcher.backend={name: slurm, kind: slurm, max_parallel: 8, resources: {time: 10m}}",
]


@pytest.fixture(autouse=True)
def _home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAELSTROM_HOME", str(tmp_path_factory.mktemp("maelstrom-home")))


@pytest.fixture
def _cluster(request: pytest.FixtureRequest) -> None:
    if "slurm" in request.node.callspec.id:
        request.getfixturevalue("slurm")


@pytest.mark.usefixtures("_cluster")
@pytest.mark.parametrize(
    "launcher_name, overrides", [("maelstrom", []), ("maelstrom", ON_SLURM)], ids=["local", "slurm"]
)
class TestMaelstromLauncher(LauncherTestSuite):
    pass


@pytest.mark.usefixtures("_cluster")
@pytest.mark.parametrize(
    "task_launcher_cfg, extra_flags",
    [({}, ["-m", "hydra/launcher=maelstrom"]), ({}, ["-m", "hydra/launcher=maelstrom", *ON_SLURM])],
    ids=["local", "slurm"],
)
class TestMaelstromLauncherIntegration(IntegrationTestSuite):
    pass
