"""The dataset cache and ``load_dataset``: two processes at once, LRU eviction, bad files, the CLI."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from maelstrom_run.core.errors import DataError
from maelstrom_run.data.cache import Cache, Request, parse_size, sha256
from maelstrom_run.data.datasets import dataset_config, load_dataset
from maelstrom_run.data.samples import generate_ap5

sys.path.insert(0, str(Path(__file__).parent))
from data_server import DataServer  # noqa: E402


def _files(directory: Path, sizes: list[int]) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate(sizes):
        path = directory / f"f{i}.bin"
        path.write_bytes(rng.bytes(size))
        paths.append(path)
    return paths


def test_two_processes_fill_the_cache_at_once(tmp_path: Path, cli_env: dict) -> None:
    root = tmp_path / "served"
    _files(root / "bucket" / "data", [300_000] * 4)
    script = textwrap.dedent(
        """\
        import sys
        from maelstrom_run.data.cache import Cache
        from maelstrom_run.data.datasets import load_dataset
        url = sys.argv[1]
        config = {"kind": "ap5", "name": "two", "source": "remote", "tiers": {},
                  "remote": {"url": url, "tiers": {"all": {"prefix": "data/"}}}}
        ds = load_dataset(config, "all", cache=Cache(jobs=2), progress=False)
        print("\\n".join(map(str, ds.files)))
        """
    )
    with DataServer(root, tmp_path / "log.jsonl", delay=0.01, chunk=32 * 1024) as server:
        command = [sys.executable, "-c", script, f"{server.url}/bucket"]
        procs = [subprocess.Popen(command, env=cli_env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        requests = server.requests()
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] and len(outputs[0].split()) == 4
    # each file fetched whole once, by one of the two (a slow machine may add a resumed Range request)
    downloads = [r for r in requests if r["path"].endswith(".bin") and r["status"] == 200]
    assert sorted(r["path"] for r in downloads) == [f"/bucket/data/f{i}.bin" for i in range(4)]
    cache = Cache(Path(cli_env["MAELSTROM_HOME"]) / "cache")
    entries = cache.entries()
    assert len(entries) == 4 and all(sha256(e.path) == e.checksum for e in entries)


def test_least_recently_used_files_are_evicted(tmp_path: Path, maelstrom_home: Path) -> None:
    a, b, c, d = _files(tmp_path / "src", [100_000] * 4)
    cache = Cache(limit=parse_size("250kB"))
    pa, pb = cache.fetch(str(a)), cache.fetch(str(b))
    cache.fetch(str(a))  # a is now used more recently than b
    pc = cache.fetch(str(c))
    assert {e.source for e in cache.entries()} == {str(a), str(c)}
    assert pa.exists() and pc.exists() and not pb.exists()
    assert cache.total_size() <= cache.limit
    cache.fetch(str(d))
    assert {e.source for e in cache.entries()} == {str(c), str(d)}


def test_parse_size() -> None:
    assert parse_size("50GB") == 50 * 10**9 and parse_size("500M") == 5 * 10**8 and parse_size("1024") == 1024
    with pytest.raises(DataError, match="not a size"):
        parse_size("lots")


def test_unknown_dataset_name(cli_env: dict, run_cli) -> None:
    with pytest.raises(DataError, match="no such dataset; did you mean 'ap5'"):
        dataset_config("ap55")
    result = run_cli(["maelstrom", "data", "get", "ap9"], env=cli_env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "maelstrom: error: dataset 'ap9': no such dataset; did you mean 'ap6'? (available: "
        + ", ".join(sorted(p.stem for p in (Path(__file__).parents[1] / "conf" / "dataset").glob("*.yaml")))
        + ")"
    ]


def test_unknown_tier_names_both_kinds(maelstrom_home: Path) -> None:
    with pytest.raises(
        DataError, match="no tier .huge.; sample tiers: full, small, tiny, remote tiers: 5GB, 5TB"
    ):
        load_dataset("ap1", "huge")


def test_truncated_netcdf_and_missing_keys(tmp_path: Path, maelstrom_home: Path) -> None:
    (good,) = generate_ap5(tmp_path / "data", months=1, times=4, lat=12, lon=16)
    config = {"kind": "ap5", "name": "local5", "source": "files", "path": str(tmp_path / "data")}
    ds = load_dataset(config)
    assert ds.files == [good] and ds.to_xarray()["t2m_tar"].dtype == np.float32
    with pytest.raises(DataError, match=f"{good}: no variable 't2m'; it has t2m_in, t2m_tar, z_in, z_tar"):
        ds.to_xarray(["t2m"])
    with pytest.raises(DataError, match=f"{good}: no dimension 'x'"):
        ds.to_xarray(select={"x": slice(0, 2)})
    truncated = tmp_path / "data" / "downscaling_tier1_2016-05.nc"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(
        DataError, match=f"{truncated}: a NetCDF4/HDF5 file that cannot be read .*truncated or corrupted"
    ):
        load_dataset(config).to_xarray()
    with pytest.raises(DataError, match="matches no file"):
        load_dataset({**config, "path": str(tmp_path / "nowhere" / "*.nc")})


def test_sample_tiers_and_pytorch_adapter(maelstrom_home: Path) -> None:
    ds = load_dataset("ap5", "tiny")
    sizes = dataset_config("ap5")["tiers"]["tiny"]
    assert ds.source == "sample" and len(ds.files) == sizes["months"]
    torch_ds = ds.to_pytorch(["t2m_in", "z_in", "t2m_tar"])
    assert len(torch_ds) == sizes["months"] * sizes["times"]
    last = torch_ds[len(torch_ds) - 1]
    assert set(last) == {"t2m_in", "z_in", "t2m_tar"} and tuple(last["t2m_in"].shape) == (96, 128)
    expected = ds.to_xarray(["t2m_in"])["t2m_in"].isel(time=-1).values
    np.testing.assert_array_equal(last["t2m_in"].numpy(), expected)
    ap6 = load_dataset("ap6", "tiny").to_xarray(pattern="ml_*.nc")
    assert set(ap6.data_vars) == {"t", "q", "u", "v"} and ap6["u"].dims == (
        "time",
        "level",
        "latitude",
        "longitude",
    )


@pytest.mark.slow
def test_tfdataset_adapter(maelstrom_home: Path) -> None:
    ds = load_dataset("ap3", "tiny")
    tf_ds = ds.to_tfdataset(["temperature_hl", "pressure_hl"], pattern="rad4NN_inputs_*")
    first = next(iter(tf_ds))
    assert tuple(first["pressure_hl"].shape) == (138,)
    assert first["pressure_hl"].dtype.name == "float32"


def test_cache_list_and_clear_through_the_cli(tmp_path: Path, cli_env: dict, run_cli) -> None:
    src = tmp_path / "mirror"
    _files(src / "runs", [50_000, 60_000])
    conf = tmp_path / "conf" / "dataset"
    conf.mkdir(parents=True)
    (conf / "mirror.yaml").write_text(
        f"kind: ap5\nname: mirror\nsource: remote\ntiers: {{}}\n"
        f"remote:\n  url: {src}\n  tiers:\n    all: {{prefix: runs}}\n"
    )
    env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(tmp_path / "conf")}
    got = run_cli(["maelstrom", "data", "get", "mirror", "--tier", "all"], env=env, check=True)
    assert "mirror (ap5) tier all from remote: 2 file(s), 110.0 kB" in got.stdout
    run_cli(["maelstrom", "data", "get", "ap5"], env=env, check=True)
    listing = run_cli(["maelstrom", "data", "cache", "list"], env=env, check=True).stdout
    assert "2 downloaded file(s), 110.0 kB; 1 sample set(s)" in listing
    assert str(src / "runs" / "f0.bin") in listing and "sample: 3m-48t-96x128" in listing
    cleared = run_cli(
        ["maelstrom", "data", "cache", "clear", "--dataset", "mirror", "--yes"], env=env, check=True
    )
    assert "cleared dataset mirror: 2 downloaded file(s), 0 sample set(s), 110.0 kB freed" in cleared.stdout
    listing = run_cli(["maelstrom", "data", "cache", "list"], env=env, check=True).stdout
    assert "0 downloaded file(s), 0 B; 1 sample set(s)" in listing
    run_cli(["maelstrom", "data", "cache", "clear", "--yes"], env=env, check=True)
    listing = run_cli(["maelstrom", "data", "cache", "list"], env=env, check=True).stdout
    assert "0 downloaded file(s), 0 B; 0 sample set(s), 0 B" in listing
    assert Cache(Path(cli_env["MAELSTROM_HOME"]) / "cache").entries() == []


def test_verify_rechecks_cached_files(tmp_path: Path, maelstrom_home: Path) -> None:
    (src,) = _files(tmp_path / "src", [20_000])
    cache = Cache()
    path = cache.fetch(Request(str(src), checksum=sha256(src)))
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    stat = path.stat()
    path.write_bytes(bytes(data))
    import os

    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same size and time: only a hash sees it
    assert cache.fetch(str(src), verify=True) == path and sha256(path) == sha256(src)
