"""Downloads over a real loopback HTTP server: resume after the server dies, S3 listings,
checksums, corrupted entries, missing files, a dead server and a full disk."""

from __future__ import annotations

import os
import resource
import signal
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from maelstrom_run.core.errors import DataError
from maelstrom_run.core.retry import RetryPolicy
from maelstrom_run.data.cache import Cache, Request, sha256
from maelstrom_run.data.datasets import load_dataset
from maelstrom_run.data.samples import generate_ap5
from maelstrom_run.data.sources import list_objects

sys.path.insert(0, str(Path(__file__).parent))
from data_server import DataServer  # noqa: E402

FAST = RetryPolicy(retries=1, delay=0.05, max_delay=0.1, timeout_s=5)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``bucket/tier-1/downscaling_tier1_2016-0[4-6].nc``: real NetCDF files of AP5's layout."""
    root = tmp_path_factory.mktemp("served")
    generate_ap5(root / "bucket" / "tier-1", months=3, times=16, lat=96, lon=128, seed=3)
    return root


def _config(url: str, **tier: object) -> dict:
    return {
        "kind": "ap5",
        "name": "downscaling-test",
        "source": "remote",
        "tiers": {},
        "remote": {"url": url, "tiers": {"t": tier}},
    }


def test_resume_after_the_server_dies(bucket: Path, tmp_path: Path, maelstrom_home: Path) -> None:
    name = "tier-1/downscaling_tier1_2016-04.nc"
    source = bucket / "bucket" / name
    expected = sha256(source)
    log = tmp_path / "requests.jsonl"
    server = DataServer(bucket, log, delay=0.01, chunk=32 * 1024).start()
    url = f"{server.url}/bucket/{name}"
    cache = Cache(retry=RetryPolicy(retries=59, delay=0.05, max_delay=0.2, timeout_s=5))
    part = cache.path_for(url).with_name(cache.path_for(url).name + ".part")
    result: dict[str, object] = {}

    def fetch() -> None:
        try:
            result["path"] = cache.fetch(Request(url, checksum=expected))
        except Exception as exc:  # noqa: BLE001 - reported to the test below
            result["error"] = exc

    thread = threading.Thread(target=fetch)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not (part.exists() and part.stat().st_size >= 400_000):
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.01)
        server.kill()  # in the middle of the body
        had = part.stat().st_size
        assert 0 < had < source.stat().st_size
        restarted = DataServer(bucket, log, port=server.port).start()  # same URL
        thread.join(60)
    finally:
        server.kill()
        if "restarted" in locals():
            restarted.kill()
    assert "error" not in result, result.get("error")
    path = Path(result["path"])  # type: ignore[arg-type]
    assert sha256(path) == expected and not part.exists()
    gets = [r for r in server.requests() if r["method"] == "GET" and r["path"].endswith(name)]
    resumed = [r for r in gets if r["range"]]
    assert resumed, gets
    start = int(resumed[0]["range"].removeprefix("bytes=").rstrip("-"))
    assert start >= had and resumed[0]["status"] == 206
    # the second server sent only the rest of the file
    assert resumed[-1]["sent"] == source.stat().st_size - int(resumed[-1]["range"][6:].rstrip("-"))
    (entry,) = cache.entries()
    assert entry.source == url and entry.checksum == expected and entry.size == source.stat().st_size


def test_s3_listing_pages_and_parallel_download(bucket: Path, tmp_path: Path, maelstrom_home: Path) -> None:
    with DataServer(bucket, tmp_path / "log.jsonl", page=2) as server:
        listed = list_objects(f"{server.url}/bucket", "tier-1/", retry=FAST)
        assert [k for k, _ in listed] == [f"tier-1/downscaling_tier1_2016-0{m}.nc" for m in (4, 5, 6)]
        assert all(size == (bucket / "bucket" / k).stat().st_size for k, size in listed)
        pages = [r for r in server.requests() if "list-type=2" in r["path"]]
        assert len(pages) == 2  # two keys a page, then the continuation
        config = _config(f"{server.url}/bucket", prefix="tier-1/")
        ds = load_dataset(config, "t", cache=Cache(jobs=3, retry=FAST), progress=False)
        assert ds.source == "remote" and len(ds.files) == 3
        assert [sha256(p) for p in ds.files] == [sha256(bucket / "bucket" / k) for k, _ in listed]
        xr_ds = ds.to_xarray(["t2m_in", "t2m_tar"])
        assert dict(xr_ds.sizes) == {"time": 48, "lat": 96, "lon": 128}
        # a second load is served from the cache: no further GET of a file
        before = len(server.requests())
        load_dataset(config, "t", cache=Cache(retry=FAST), progress=False)
        assert [r for r in server.requests()[before:] if "list-type" not in r["path"]] == []


def test_checksum_mismatch_is_never_served(bucket: Path, tmp_path: Path, maelstrom_home: Path) -> None:
    name = "tier-1/downscaling_tier1_2016-05.nc"
    with DataServer(bucket, tmp_path / "log.jsonl") as server:
        cache = Cache(retry=FAST)
        url = f"{server.url}/bucket/{name}"
        with pytest.raises(DataError, match="checksum mismatch") as info:
            cache.fetch(Request(url, checksum="sha256:" + "0" * 64))
        assert url in str(info.value)
        gets = [r for r in server.requests() if r["path"].endswith(name)]
    assert len(gets) == 2  # fetched once more from scratch before giving up
    assert cache.entries() == []
    assert not [p for p in (cache.root / "files").rglob("*") if p.is_file()]


def test_corrupted_entry_is_fetched_again(bucket: Path, tmp_path: Path, maelstrom_home: Path) -> None:
    name = "tier-1/downscaling_tier1_2016-06.nc"
    good = sha256(bucket / "bucket" / name)
    with DataServer(bucket, tmp_path / "log.jsonl") as server:
        cache = Cache(retry=FAST)
        url = f"{server.url}/bucket/{name}"
        path = cache.fetch(url)
        assert sha256(path) == good
        with open(path, "r+b") as fh:  # flip some bytes in place: same size
            fh.seek(5000)
            fh.write(b"\xff" * 64)
        again = cache.fetch(url)
        gets = [r for r in server.requests() if r["path"].endswith(name)]
    assert again == path and sha256(again) == good
    assert len(gets) == 2 and all(r["range"] is None for r in gets)


def test_missing_file_and_dead_server(bucket: Path, tmp_path: Path, maelstrom_home: Path) -> None:
    with DataServer(bucket, tmp_path / "log.jsonl") as server:
        url = f"{server.url}/bucket/tier-1/nope.nc"
        with pytest.raises(DataError, match="not found") as info:
            Cache(retry=FAST).fetch(url)
        assert url in str(info.value)
        port = server.port
    dead = f"http://127.0.0.1:{port}/bucket/tier-1/downscaling_tier1_2016-04.nc"
    with pytest.raises(DataError, match="gave up after 2 attempt") as info:
        Cache(retry=FAST).fetch(dead)
    assert dead in str(info.value)
    assert Cache().entries() == []


def _no_bigger_files() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))


def test_full_disk_during_download(bucket: Path, tmp_path: Path, cli_env: dict, run_cli) -> None:
    """The file system refuses to grow the file: one line naming it, nothing left in the cache."""
    import subprocess

    with DataServer(bucket, tmp_path / "log.jsonl") as server:
        conf = tmp_path / "conf" / "dataset"
        conf.mkdir(parents=True)
        (conf / "remote5.yaml").write_text(
            textwrap.dedent(
                f"""\
                kind: ap5
                name: remote5
                source: remote
                tiers: {{}}
                remote:
                  url: {server.url}/bucket
                  tiers:
                    all: {{prefix: tier-1/}}
                """
            )
        )
        env = {**cli_env, "MAELSTROM_CONFIG_PATH": str(tmp_path / "conf")}
        command = [os.path.join(os.path.dirname(sys.executable), "maelstrom")]
        command += ["data", "get", "remote5", "--tier", "all", "--retries", "1"]
        result = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=120, preexec_fn=_no_bigger_files
        )
    assert result.returncode == 2, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("maelstrom: error:")]
    assert "no space left" in line.lower() and "nothing of it was kept" in line
    cache = Cache(Path(cli_env["MAELSTROM_HOME"]) / "cache")
    assert cache.entries() == []
    assert not list((cache.root / "files").rglob("*.part"))
    listing = run_cli(["maelstrom", "data", "cache", "list"], env=cli_env, check=True)
    assert "0 downloaded file(s)" in listing.stdout


def test_load_dataset_from_a_composed_config(
    bucket: Path, tmp_path: Path, maelstrom_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``cfg.dataset`` as Hydra composes it: nested sections and interpolations become plain values."""
    from hydra import compose, initialize_config_module
    from omegaconf import DictConfig, OmegaConf

    with DataServer(bucket, tmp_path / "log.jsonl") as server:
        monkeypatch.setenv("MAELSTROM_TEST_BUCKET", f"{server.url}/bucket")
        overrides = ["dataset=ap5", "dataset.source=remote", "+dataset.remote.tiers.t={prefix: tier-1/}"]
        with initialize_config_module("maelstrom_run.conf", version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        cfg.dataset.remote.url = "${oc.env:MAELSTROM_TEST_BUCKET}"
        assert isinstance(cfg.dataset, DictConfig) and OmegaConf.is_interpolation(cfg.dataset.remote, "url")
        ds = load_dataset(cfg.dataset, "t", cache=Cache(retry=FAST), progress=False)
    assert ds.source == "remote" and [p.name for p in ds.files] == [
        f"downscaling_tier1_2016-0{m}.nc" for m in (4, 5, 6)
    ]
    assert type(ds.config["remote"]) is dict and type(ds.config["remote"]["tiers"]["t"]) is dict
    assert ds.config["remote"]["url"] == f"{server.url}/bucket"
    assert dict(ds.to_xarray(["t2m_in"]).sizes) == {"time": 48, "lat": 96, "lon": 128}
