"""AP4 (ENS-10): generated layout, preprocessing (statistics, normalised arrays, resume), loaders, app."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import netCDF4
import numpy as np
import pytest
from app_runner import run_entry
from omegaconf import OmegaConf

from maelstrom_run.core.errors import ConfigError
from maelstrom_run.data import ens10
from maelstrom_run.data.preprocess import (
    NetCDFENS10,
    PreprocessedENS10,
    compute_stats,
    plan,
    preprocess,
)

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZES = {"dates": 3, "years": 4, "lat": 19, "lon": 36, "levels": [500, 850], "steps": [0, 24, 48]}


def _config(tmp_path: Path, **dataset: object) -> dict:
    config = {"dataset": {**OmegaConf.to_container(OmegaConf.load(CONF / "dataset" / "ap4.yaml")), **dataset}}
    config["dataset"]["tiers"]["tiny"] = dict(SIZES)
    config["train"] = {"tier": "tiny"}
    return config


@pytest.fixture
def tiny(tmp_path: Path):
    """(plan, cache dir) of a small generated AP4 dataset (t850)."""
    cache = tmp_path / "cache"
    return plan(_config(tmp_path), cache), cache


def test_generated_files_have_the_ens10_layout(tiny):
    p, _ = tiny
    names = sorted(f.name for f in p.source.iterdir())
    assert names == sorted(
        [f"output.pl.2018{d}.nc" for d in ("0101", "0104", "0108")]
        + [f"ERA5.2018{d}.nc" for d in ("0101", "0104", "0108")]
    )
    with netCDF4.Dataset(p.source / "output.pl.20180104.nc") as nc:
        assert list(nc.dimensions) == ["time", "step", "isobaricInhPa", "latitude", "longitude"]
        assert [len(d) for d in nc.dimensions.values()] == [4, 3, 2, 19, 36]
        assert list(nc["step"][:]) == [0, 24, 48] and list(nc["isobaricInhPa"][:]) == [500, 850]
        assert nc["latitude"][0] == 90 and nc["latitude"][-1] == -90 and nc["longitude"][0] == 0
        for v in "ztqwduv":
            for stat in ("mean", "std"):
                var = nc[f"{v}_{stat}"]
                assert var.dtype == np.float32 and var.dimensions[0] == "time"
                assert var.chunking() == [1, 1, 1, 19, 36] and var.filters()["zlib"]
        assert (nc["t_std"][:, 2] > nc["t_std"][:, 0]).all()  # the spread grows with the lead time
        t850 = nc["t_mean"][:, 2, 1]
    with netCDF4.Dataset(p.source / "ERA5.20180104.nc") as nc:
        assert set(nc.variables) >= {"z500", "t850", "t2m"}
        truth = nc["t850"][:]
    assert 200 < t850.mean() < 300 and 0.5 < np.abs(truth - t850).mean() < 5


def test_statistics_match_numpy_and_arrays_are_normalised(tiny, tmp_path):
    p, _ = tiny
    assert p.validation_years == 1 and p.n_train == 9 and len(p.samples()) == 12
    result = preprocess(p, tmp_path / "out")
    assert (result.samples, result.written) == (12, 12)
    stats = compute_stats(p, tmp_path / "out")
    # numpy over every training year of every file, field by field and level by level
    for f, field in enumerate(p.fields):
        values = []
        for date in p.dates:
            with netCDF4.Dataset(p.file("pl", date)) as nc:
                values.append(np.asarray(nc[field][: p.train_years, 2], dtype=np.float64))
        values = np.concatenate(values)  # (years * dates, level, lat, lon)
        for level in range(2):
            assert stats["mean"][f, level] == pytest.approx(values[:, level].mean(), rel=1e-9, abs=1e-12)
            assert stats["std"][f, level] == pytest.approx(values[:, level].std(), rel=1e-6)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["channels"][-3:] == ["t850_era5", "t_mean", "t_std"]
    assert manifest["samples"][10] == {"date": "0104", "year": 2001}
    sample = np.load(tmp_path / "out" / "samples" / "00010.npy")
    assert sample.shape == (17, 19, 36) and sample.dtype == np.float32
    with netCDF4.Dataset(p.file("pl", "0104")) as nc, netCDF4.Dataset(p.file("era5", "0104")) as era5:
        for c, field in enumerate(p.fields):
            raw = nc[field][3, 2, 1]
            f = stats["fields"].index(field)
            expected = (raw - stats["mean"][f, 1]) / stats["std"][f, 1]
            np.testing.assert_allclose(sample[c], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(sample[14], era5["t850"][3])
        np.testing.assert_array_equal(sample[15], nc["t_mean"][3, 2, 1])
        np.testing.assert_array_equal(sample[16], nc["t_std"][3, 2, 1])
    # the training samples are normalised: about zero mean and unit variance per channel
    train = np.stack([np.load(tmp_path / "out" / "samples" / f"{i:05d}.npy") for i in range(9)])
    assert np.abs(train[:, :14].mean(axis=(0, 2, 3))).max() < 0.05
    assert np.abs(train[:, :14].std(axis=(0, 2, 3)) - 1).max() < 0.05


def test_loaders_agree_and_split_by_year(tiny, tmp_path):
    p, _ = tiny
    preprocess(p, tmp_path / "out")
    stats = compute_stats(p, tmp_path / "out")
    arrays, direct = PreprocessedENS10(tmp_path / "out", "train"), NetCDFENS10(p, stats, "train")
    validation = PreprocessedENS10(tmp_path / "out", "validation")
    assert (len(arrays), len(direct), len(validation)) == (9, 9, 3)
    a = arrays.batch([3, 0, 8]).copy()
    np.testing.assert_allclose(a, direct.batch([3, 0, 8]), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(arrays[3], a[0])  # map-style access, as a PyTorch dataset
    points = np.array([0, 5, 100, 683])
    np.testing.assert_array_equal(arrays.batch_points([3, 0], points), a[:2].reshape(2, 17, -1)[:, :, points])
    np.testing.assert_allclose(
        direct.batch_points([3, 0], points), a[:2].reshape(2, 17, -1)[:, :, points], atol=1e-6
    )
    assert isinstance(arrays._maps[0], np.memmap)
    assert arrays.bytes_read > 0 and direct.bytes_read >= 3 * 17 * 19 * 36 * 4
    direct.close()


def test_interrupted_preprocessing_resumes_without_recomputing(tiny, tmp_path):
    p, _ = tiny
    out = tmp_path / "out"

    def interrupt(index: int) -> None:
        if index == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        preprocess(p, out, on_sample=interrupt)
    assert not json.loads((out / "manifest.json").read_text())["complete"]
    with pytest.raises(ConfigError, match="interrupted"):
        PreprocessedENS10(out)
    done = {f.name: f.stat().st_ino for f in (out / "samples").glob("*.npy")}
    assert len(done) == 5
    written = []
    result = preprocess(p, out, on_sample=written.append)
    assert written == list(range(5, 12)) and result.written == 7
    assert {f.name: f.stat().st_ino for f in (out / "samples").glob("*.npy") if f.name in done} == done
    fresh = preprocess(p, tmp_path / "fresh")
    for i in range(12):
        name = f"{i:05d}.npy"
        np.testing.assert_array_equal(
            np.load(out / "samples" / name), np.load(fresh.output / "samples" / name)
        )
    assert preprocess(p, out).written == 0  # complete: nothing to do


def test_killed_preprocess_command_resumes(tmp_path, cli_env, run_cli):
    """SIGKILL in the middle of ``maelstrom data preprocess``; the same command finishes the job."""
    sizes = {"dates": 12, "years": 5, "lat": 181, "lon": 360, "levels": [850], "steps": [48]}
    overrides = ["app=ap4", *(f"dataset.tiers.tiny.{k}={v}" for k, v in sizes.items())]
    overrides = [o.replace(" ", "") for o in overrides]
    cache = Path(cli_env["MAELSTROM_HOME"]) / "cache"
    ens10.ensure_ap4(cache, sizes, kinds=("pl",))  # generated beforehand: the kill lands in the preprocessing
    out = tmp_path / "arrays"
    command = [
        shutil.which("maelstrom", path=cli_env["PATH"]),
        "data",
        "preprocess",
        *overrides,
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((out / "samples").glob("0000[1-9].npy")) and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate()
    manifest = json.loads((out / "manifest.json").read_text())
    done = {f.name: f.stat().st_ino for f in (out / "samples").glob("*.npy")}
    assert not manifest["complete"] and 0 < len(done) < 60, len(done)

    result = run_cli(
        ["maelstrom", "data", "preprocess", *overrides, "--output", out], env=cli_env, check=True
    )
    assert f"{len(done)} already done" in result.stderr and "next: maelstrom-run app=ap4" in result.stderr
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert len(list((out / "samples").glob("*.npy"))) == 60 and not list(out.rglob(".*.tmp"))
    assert {name: (out / "samples" / name).stat().st_ino for name in done} == done
    # the same arrays as an uninterrupted run
    again = run_cli(["maelstrom", "data", "preprocess", *overrides, "-q"], env=cli_env, check=True)
    assert "wrote 60 samples" in again.stderr
    fresh = next((cache / "preprocessed" / "ap4").iterdir())
    for i in (0, 17, 59):
        name = f"{i:05d}.npy"
        np.testing.assert_array_equal(np.load(out / "samples" / name), np.load(fresh / "samples" / name))


def test_bad_input_gives_one_clear_line(tiny, tmp_path, cli_env, run_cli):
    p, cache = tiny
    with pytest.raises(
        ConfigError, match=r"dataset.variables: 'x' is not in .*output.pl.20180101.nc \(it has d, q"
    ):
        plan(_config(tmp_path, variables=["z", "x"]), cache)
    with pytest.raises(ConfigError, match=r"dataset.step: 12 h is not in"):
        plan(_config(tmp_path, step=12), cache)
    with pytest.raises(ConfigError, match=r"dataset.target: z500 needs 500 hPa"):
        generated = tmp_path / "only850"
        ens10.generate_ap4(generated, 1, 2, 5, 8, levels=[850], kinds=("pl",))
        plan(_config(tmp_path, source="files", path=str(generated), target="z500"), cache)
    files = tmp_path / "files"
    shutil.copytree(p.source, files)
    (files / "ERA5.20180104.nc").unlink()
    with pytest.raises(ConfigError, match=r"ERA5.20180104.nc: no such file"):
        plan(_config(tmp_path, source="files", path=str(files)), cache)
    shutil.copy(p.source / "ERA5.20180104.nc", files)
    truncated = files / "output.pl.20180108.nc"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    q = plan(_config(tmp_path, source="files", path=str(files)), cache)
    with pytest.raises(ConfigError, match=r"output.pl.20180108.nc: cannot read it as NetCDF .*truncated"):
        preprocess(q, tmp_path / "bad")

    result = run_cli(
        ["maelstrom", "data", "preprocess", "app=ap4", "dataset.source=files", f"dataset.path={files}"],
        env=cli_env,
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()[-1:]
    assert (
        line.startswith("maelstrom: error: ")
        and "output.pl.20180108.nc" in line
        and "Traceback" not in result.stderr
    )
    result = run_cli(["maelstrom", "data", "preprocess", "app=ap1"], env=cli_env)
    assert result.returncode == 2 and "only AP4" in result.stderr
    result = run_cli(["maelstrom", "data", "preprocess", "dataset.tagret=t2m"], env=cli_env)
    assert result.returncode == 2 and "did you mean 'target'" in result.stderr


def _run_app(tmp_path: Path, **overrides: object) -> tuple[dict, list]:
    cfg = OmegaConf.create(
        {
            "app": OmegaConf.load(CONF / "app" / "ap4.yaml").app,
            "train": OmegaConf.load(CONF / "train" / "tiny.yaml"),
            "dataset": OmegaConf.load(CONF / "dataset" / "ap4.yaml"),
            "loader": OmegaConf.load(CONF / "loader" / "ap4.yaml"),
            "model": OmegaConf.load(CONF / "model" / "ap4_mlp.yaml"),
        }
    )
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([f"{k}={v}" for k, v in overrides.items()]))
    if "model" in overrides:
        cfg.model = OmegaConf.load(CONF / "model" / f"{overrides['model']}.yaml")
    result, metrics, _ = run_entry(tmp_path, cfg)
    return result, metrics


def test_app_trains_the_same_from_netcdf_and_from_arrays(tmp_path):
    arrays, metrics = _run_app(tmp_path, **{"train.epochs": 1})
    direct, _ = _run_app(tmp_path, **{"train.epochs": 1, "loader.preprocessed": False})
    assert arrays["loss"] == pytest.approx(direct["loss"], rel=1e-5)
    assert arrays["val_crps"] == pytest.approx(direct["val_crps"], rel=1e-5)
    ((step, values),) = metrics
    assert step == 1 and values["count.samples"] == 48 and values["count.bytes_read"] == 48 * 17 * 37 * 72 * 4
    for phase in ("io", "forward", "backward", "step", "validation"):
        assert values[f"phase.{phase}.total_s"] > 0
    assert (tmp_path / "run" / "model.pt").stat().st_size > 0
    unet, _ = _run_app(tmp_path, model="ap4_unet", **{"train.epochs": 1, "dataset.target": "z500"})
    assert all(math.isfinite(v) for v in unet.values())


@pytest.mark.slow
def test_maelstrom_run_ap4_end_to_end(run_cli, cli_env, tmp_path, maelstrom_home):
    import mlflow

    result = run_cli(["app=ap4"], cwd=tmp_path, env=cli_env, check=True, timeout=300)
    assert "epoch 3/3" in result.stdout and "succeeded" in result.stderr
    assert "from memory-mapped arrays" in result.stdout
    client = mlflow.MlflowClient(f"sqlite:///{maelstrom_home / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("ap4").experiment_id])
    assert run.info.status == "FINISHED" and run.data.tags["label.framework"] == "pytorch"
    crps = [m.value for m in client.get_metric_history(run.info.run_id, "val_crps")]
    ensemble = run.data.metrics["val_crps_ensemble"]
    assert len(crps) == 3 and crps[-1] < crps[0] and crps[-1] < ensemble  # beats the raw ensemble
    assert "model.pt" in {a.path for a in client.list_artifacts(run.info.run_id)}
    # the arrays stay in the cache for the next run
    assert list((maelstrom_home / "cache" / "preprocessed" / "ap4").glob("t850-*/manifest.json"))


def test_packed_and_filled_files_are_decoded_as_xarray_does(tiny, tmp_path):
    """ENS-10 files packed into int16 with fill values (as archive downloads are): the statistics
    and the normalised samples are those of xarray's decoded values, fill values left out."""
    import xarray as xr

    p, _ = tiny
    packed_dir = tmp_path / "packed"
    packed_dir.mkdir()
    rng = np.random.default_rng(1)
    for source in p.source.iterdir():
        with xr.open_dataset(source) as ds:
            ds = ds.load()
        encoding = {}
        for name, var in ds.data_vars.items():
            if var.dtype.kind != "f" or var.ndim < 3:
                continue
            values = var.values.copy()
            values[rng.random(values.shape) < 0.01] = np.nan
            ds[name] = var.copy(data=values)
            low, high = np.nanmin(values), np.nanmax(values)
            scale = float(high - low) / 65000 or 1.0
            encoding[name] = {"dtype": "int16", "scale_factor": scale, "add_offset": float(low + high) / 2,
                              "_FillValue": np.int16(-32767)}  # fmt: skip
        ds.to_netcdf(packed_dir / source.name, encoding=encoding)
    packed = plan(_config(tmp_path, source="files", path=str(packed_dir)), tmp_path / "cache2")
    preprocess(packed, tmp_path / "out")
    stats = compute_stats(packed, tmp_path / "out")
    for f, field in enumerate(packed.fields):
        values = []
        for date in packed.dates:
            with xr.open_dataset(packed.file("pl", date)) as ds:
                assert ds[field].encoding["dtype"] == np.int16
                values.append(ds[field].values[: packed.train_years, 2])
        values = np.concatenate(values)
        for level in range(2):
            assert stats["mean"][f, level] == pytest.approx(np.nanmean(values[:, level]), rel=1e-5, abs=1e-7)
            assert stats["std"][f, level] == pytest.approx(np.nanstd(values[:, level]), rel=1e-4)
    sample = np.load(tmp_path / "out" / "samples" / "00010.npy")
    with xr.open_dataset(packed.file("pl", "0104")) as ds:
        for c, field in enumerate(packed.fields):
            f = stats["fields"].index(field)
            expected = (ds[field].values[3, 2, 1] - stats["mean"][f, 1]) / stats["std"][f, 1]
            np.testing.assert_allclose(sample[c], expected, rtol=1e-5, atol=1e-5)  # NaN where filled
        np.testing.assert_allclose(sample[15], ds["t_mean"].values[3, 2, 1], rtol=1e-6)
