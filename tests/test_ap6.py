"""AP6 (wind power): the generated layout against the plugin's, the regimes and the MLP, the
baselines against independent computations and bad input
(tests/test_new_apps_end_to_end.py runs the tiny tier through the CLI, locally and on Slurm)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from app_runner import run_main

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data.samples import generate_ap6

torch = pytest.importorskip("torch")

from maelstrom_run.apps.ap6 import train  # noqa: E402  (after the skip)
from maelstrom_run.apps.ap6.model import ProductionMLP, Regimes  # noqa: E402


def test_generated_files_have_the_plugins_layout(tmp_path):
    files = generate_ap6(tmp_path, days=2, turbines=2, levels=3, lat=8, lon=8)
    names = {p.relative_to(tmp_path).as_posix() for p in files}
    # weather/abc.py: {type}_{YYYYMMDD}_{00|12}.nc for ml, pl, sfc; production.py: production_data/wind_turbine_{id}.nc
    weather = {f"{k}_201701{d:02d}_{r}.nc" for k in ("ml", "pl", "sfc") for d in (1, 2) for r in ("00", "12")}
    assert names == weather | {"production_data/wind_turbine_1.nc", "production_data/wind_turbine_2.nc"}
    with netCDF4.Dataset(tmp_path / "pl_20170101_12.nc") as nc:
        assert nc["z"].dimensions == ("time", "level", "latitude", "longitude") and len(nc["time"]) == 48
        assert list(nc["level"][:]) == [500, 700, 850, 1000]
    with netCDF4.Dataset(tmp_path / "production_data" / "wind_turbine_2.nc") as nc:
        assert nc["production"].units == "kW" and np.diff(nc["time"][:2])[0] == 10  # every 10 minutes


def test_regimes_find_the_patterns_and_the_mlp_gives_a_share():
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(3)
    patterns = rng.standard_normal((3, 6, 7)) * 10
    truth = rng.integers(0, 3, 120)
    fields = patterns[truth] + 0.5 * rng.standard_normal((120, 6, 7))
    regimes = Regimes.fit(fields, components=3, regimes=3, seed=0)
    assert adjusted_rand_score(truth, regimes.predict(fields)) == 1.0
    assert regimes.centres().shape == (3, 6, 7)
    out = ProductionMLP(5, [8])(torch.randn(11, 5))
    assert out.shape == (11,) and bool(((out >= 0) & (out <= 1)).all())


def test_baselines_match_independent_computations():
    import pandas as pd

    rng = np.random.default_rng(4)
    production = rng.uniform(0, 1, 72)
    lead = np.tile(np.arange(12.0), 6)
    expected = [production[max(i - int(lead[i]) - 1, 0)] for i in range(72)]
    np.testing.assert_array_equal(train.persistence(production, lead), expected)
    hour = np.arange(72) % 24
    fit = np.arange(72) < 48
    means = pd.Series(production[fit]).groupby(hour[fit]).mean()
    np.testing.assert_allclose(train.climatology(production, hour, fit), means.reindex(hour).to_numpy())


def test_bad_input_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"^dataset.turbine: 7 is not there; valid: 1, 2$"):
        run_main(tmp_path, "app=ap6", "dataset.turbine=7")
    with pytest.raises(
        ConfigError, match=r"^model.regime_level: 300 is not there; valid: 500, 700, 850, 1000$"
    ):
        run_main(tmp_path, "app=ap6", "model.regime_level=300")
    files = generate_ap6(tmp_path / "files", days=1, turbines=1, levels=2, lat=4, lon=4)
    with pytest.raises(ConfigError, match=r"^dataset: the IFS run 20170101_12 has no pl_20170101_12.nc"):
        train._files([p for p in files if p.name != "pl_20170101_12.nc"])
