"""Throughput of the gridded loader against baselines measured in the same run.

    python benchmarks/loader.py [--size-gb 1.6] [--runs 3] [--dir DIR] [--quick]

Generates one AP1 forecast file (the climetlab-maelstrom-yr layout, 8 predictors) of about
``--size-gb`` GB and three ERA5-style files of about half that (``conf/loader/gridded_era5.yaml``:
5 variables on (time, latitude, longitude): float32; packed int16; packed int16 zlib-compressed),
then reads it end to end with each configuration, each run in a fresh
subprocess (so peak RSS is that configuration's own) that reads the file ``--passes`` times
(buffers reused from pass to pass, as over the epochs of a training). Every configuration runs
once per round, one warm-up round then ``--runs`` rounds; the table shows medians, and each
target ratio is the median of the ratios within a round (the two runs seconds apart, so a load
that comes and goes on a shared machine slows both alike):

- **naive**: in the style of AP1's original loader: xarray to numpy per field, normalise and
  patch with fresh arrays every step, one thread.
- **reference**: a plain threaded read-normalise-patch written directly on h5py
  (``read_direct`` into reused buffers), ``--threads`` threads.
- **loader**: :class:`maelstrom_run.data.gridded.GriddedLoader`, ``threads=1`` and ``--threads``.
- **O_DIRECT**: raw sequential reads of the file bypassing the page cache (cold only).
- **ERA5 loader**: the loader on the ERA5-style files (warm): float32 and packed int16 with
  ``--threads`` threads, the compressed file with 1 and ``--threads`` threads.

Every configuration does the same work per field: read the predictors and the target, subtract
the raw forecast from the target, normalise the predictors and cut ``--patch``-sized patches
into batches of ``--batch``. *warm*: the file is in the page cache; *cold*: it is evicted before
each run with ``posix_fadvise(POSIX_FADV_DONTNEED)``. Input GB/s counts bytes read from storage,
output GB/s bytes delivered in batches (GB = 1e9 bytes); time to first batch includes setting
the loader up. Targets (exit 1 when one is missed):

- warm input >= 2.9 GB/s with ``--threads 2`` and >= 0.95 of the reference,
- cold input >= 0.8 of the O_DIRECT read rate,
- peak RSS <= RSS of an idle process + prefetch x field size + output buffers + 64 MB,
- packed int16: output (decoded float32 bytes delivered) >= 0.8 of the float32 file's,
- zlib-compressed: ``--threads`` threads >= 1.7 x one thread (output rate; with 2 threads).

The generated file is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

GB = 1e9
MB = 1e6
WARM_TARGET_GBPS = 2.9
REFERENCE_RATIO = 0.95
COLD_RATIO = 0.8
RSS_SLACK = 64 * MB
PACKED_RATIO = 0.8
ZLIB_SCALING = 1.7
PREDICTORS = 8
#: The raw forecast ``target: difference`` subtracts (as the loader does).
BASE_INDEX = 2
#: ``loader.layout`` of the ERA5-style files (as ``conf/loader/gridded_era5.yaml``, no static fields).
ERA5_LAYOUT = {"sample_dim": "time", "y_dim": "latitude", "x_dim": "longitude",
               "predictors": ["t2m", "msl", "u10", "v10", "tcc"], "predictor_names": None,
               "target": "t2m_next", "base": None, "static": None, "leadtime": None}  # fmt: skip


# -- the measured configurations (run in a child process) ---------------------------------------


def _stats(spec: dict) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)


def _patches(ny: int, nx: int, p: int) -> list[tuple[int, int]]:
    return [(y, x) for y in range(0, ny - p + 1, p) for x in range(0, nx - p + 1, p)]


def run_naive(spec: dict) -> dict:
    import xarray as xr

    mean, std = _stats(spec)
    p, batch = spec["patch"], spec["batch"]
    read = delivered = 0
    start = time.perf_counter()
    first = None
    with xr.open_dataset(spec["file"]) as ds:
        leads, ny, nx, _ = ds["predictors"].shape
        for lead in [lead for _ in range(spec["passes"]) for lead in range(leads)]:
            raw = ds["predictors"][lead].values
            target = ds["target_mean"][lead].values - raw[..., BASE_INDEX]
            read += raw.nbytes + ds["target_mean"][lead].nbytes
            inputs = (raw - mean) / std
            windows = _patches(ny, nx, p)
            for i in range(0, len(windows), batch):
                chunk = windows[i : i + batch]
                x = np.stack([inputs[y : y + p, x0 : x0 + p] for y, x0 in chunk])
                t = np.stack([target[y : y + p, x0 : x0 + p] for y, x0 in chunk])
                delivered += x.nbytes + t.nbytes
                first = first or time.perf_counter() - start
    return {"read": read, "delivered": delivered, "seconds": time.perf_counter() - start, "first": first}


def run_reference(spec: dict) -> dict:
    """Each thread reads whole fields into its own buffers, normalises in place, patches into its batch."""
    import h5py

    mean, std = _stats(spec)
    p, batch, threads = spec["patch"], spec["batch"], spec["threads"]
    counts = {"read": 0, "delivered": 0}
    lock = threading.Lock()
    start = time.perf_counter()
    first: list[float] = []
    with h5py.File(spec["file"], "r") as f:
        pred, targ = f["predictors"], f["target_mean"]
        leads, ny, nx, np_ = pred.shape
        scale = np.tile(1 / std, nx).astype(np.float32)
        shift = np.tile(-mean / std, nx).astype(np.float32)
        windows = _patches(ny, nx, p)
        next_lead = iter([lead for _ in range(spec["passes"]) for lead in range(leads)])
        buffers = [
            (np.empty((ny, nx, np_), np.float32), np.empty((ny, nx), np.float32),
             np.empty((batch, p, p, np_), np.float32), np.empty((batch, p, p), np.float32))
            for _ in range(threads)
        ]  # fmt: skip

        def work(field: np.ndarray, target: np.ndarray, out_x: np.ndarray, out_t: np.ndarray) -> None:
            rows = field.reshape(ny, -1)
            step = max(1, (256 * 1024) // rows[0].nbytes)
            while True:
                with lock:
                    lead = next(next_lead, None)
                if lead is None:
                    return
                pred.read_direct(field, np.s_[lead])
                targ.read_direct(target, np.s_[lead])
                np.subtract(target, field[..., BASE_INDEX], out=target)
                for y in range(0, ny, step):
                    np.multiply(rows[y : y + step], scale, out=rows[y : y + step])
                    np.add(rows[y : y + step], shift, out=rows[y : y + step])
                for i in range(0, len(windows), batch):
                    chunk = windows[i : i + batch]
                    for n, (y, x) in enumerate(chunk):
                        out_x[n] = field[y : y + p, x : x + p]
                        out_t[n] = target[y : y + p, x : x + p]
                    with lock:
                        counts["delivered"] += out_x[: len(chunk)].nbytes + out_t[: len(chunk)].nbytes
                        first.append(time.perf_counter() - start)
                with lock:
                    counts["read"] += field.nbytes + target.nbytes

        workers = [threading.Thread(target=work, args=b) for b in buffers]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return {**counts, "seconds": time.perf_counter() - start, "first": min(first)}


def run_loader(spec: dict) -> dict:
    import h5py  # noqa: F401 - imported before the clock starts, as in the other configurations

    from maelstrom_run.data.gridded import GriddedLoader, GriddedOptions, Layout, Stats

    mean, std = _stats(spec)
    start = time.perf_counter()
    layout = spec.get("layout")
    options = GriddedOptions(
        batch_size=spec["batch"],
        patch_size=spec["patch"],
        threads=spec["threads"],
        prefetch=spec["prefetch"],
        shuffle=False,
        normalise=True,
        features=(),
        target="mean" if layout else "difference",
        layout=Layout.from_config(layout),
    )
    stats = Stats((mean, std), (np.zeros(3, np.float32), np.ones(3, np.float32)))
    with GriddedLoader([spec["file"]], options, stats) as loader:
        first = None
        for _ in range(spec["passes"]):
            for _ in loader:
                first = first or time.perf_counter() - start  # setting the loader up included
        seconds = time.perf_counter() - start
        counts = loader.take_counts()
    return {"read": counts["bytes_read"], "delivered": counts["bytes_delivered"], "seconds": seconds,
            "first": first, "buffers": loader.buffers, "batch_bytes": loader.batch_bytes,
            "field_bytes": loader.layout.field_bytes}  # fmt: skip


def run_odirect(spec: dict) -> dict:
    block = 16 * 1024 * 1024
    buf = mmap.mmap(-1, block)  # page aligned, as O_DIRECT needs
    view = memoryview(buf)
    fd = os.open(spec["file"], os.O_RDONLY | os.O_DIRECT)
    read, start = 0, time.perf_counter()
    try:
        while n := os.preadv(fd, [view], read):
            read += n
            if n < block:
                break
    finally:
        os.close(fd)
    return {"read": read, "delivered": 0, "seconds": time.perf_counter() - start, "first": None}


def run_idle(spec: dict) -> dict:
    import h5py  # noqa: F401 - what every configuration imports

    import maelstrom_run.data.gridded  # noqa: F401

    return {"read": 0, "delivered": 0, "seconds": 0.0, "first": None}


RUNNERS = {"naive": run_naive, "reference": run_reference, "loader": run_loader, "odirect": run_odirect,
           "idle": run_idle}  # fmt: skip


def child(spec: dict) -> None:
    result = RUNNERS[spec["kind"]](spec)
    # VmHWM: this process's own peak (ru_maxrss would carry the parent's over fork + exec)
    status = Path("/proc/self/status").read_text()
    line = next((x for x in status.splitlines() if x.startswith("VmHWM:")), None)
    rss_kb = int(line.split()[1]) if line else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["rss"] = rss_kb * 1024
    print("RESULT " + json.dumps(result))


# -- the parent -------------------------------------------------------------------------------------


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path: Path) -> None:
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(16 * 1024 * 1024)
        while f.readinto(buf):
            pass


def run_once(spec: dict, mode: str) -> dict:
    """One run of one configuration in a fresh process, the file evicted (cold) or cached (warm)."""
    if mode == "cold":
        evict(Path(spec["file"]))
    else:
        warm(Path(spec["file"]))
    # cold: one pass, or the later passes would find the file in the page cache
    command = [
        sys.executable,
        __file__,
        "--child",
        json.dumps({**spec, "passes": 1} if mode == "cold" else spec),
    ]
    proc = subprocess.run(command, capture_output=True, text=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"{spec['kind']} ({mode}) failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def measure(
    configs: list[tuple[str, str, dict]], runs: int, progress: Any
) -> dict[tuple[str, str], list[dict]]:
    """Every configuration once per round, one warm-up round and ``runs`` measured ones, the order
    reversed every other round: a ratio is then taken between runs a few seconds apart (paired per
    round), so a load that comes and goes on a shared machine moves both sides of it alike."""
    results: dict[tuple[str, str], list[dict]] = {(label, mode): [] for label, mode, _ in configs}
    for i in range(runs + 1):
        order = configs if i % 2 == 0 else configs[::-1]
        for n, (label, mode, spec) in enumerate(order, 1):
            what = "warm-up round" if i == 0 else f"round {i}/{runs}"
            progress(f"{what}: {label} ({mode}) [{n}/{len(order)}]")
            result = run_once(spec, mode)
            if i:
                results[label, mode].append(result)
    return results


def paired(a: list[dict], b: list[dict], key: str) -> float:
    """The median over rounds of ``a``'s rate over ``b``'s, ``key`` the bytes counted (read or delivered)."""
    return statistics.median(
        (x[key] / x["seconds"]) / (y[key] / y["seconds"]) for x, y in zip(a, b, strict=True)
    )


def summarise(results: list[dict]) -> dict:
    def median(key: str) -> float | None:
        values = [r[key] for r in results if r.get(key) is not None]
        return statistics.median(values) if values else None

    seconds = [r["seconds"] for r in results]
    return {
        "input": statistics.median(r["read"] / r["seconds"] / GB for r in results) if min(seconds) else 0.0,
        "output": statistics.median(r["delivered"] / r["seconds"] / GB for r in results)
        if min(seconds)
        else 0.0,
        "rss": max(r["rss"] for r in results),
        "first": median("first"),
        "extra": results[-1],
    }


def generate(directory: Path, size_gb: float, y: int, x: int) -> tuple[Path, dict]:
    from maelstrom_run.data.samples import generate_ap1

    leadtimes = max(2, round(size_gb * GB / (y * x * (PREDICTORS + 2) * 4)))
    (path,) = generate_ap1(directory, 1, leadtimes, y, x, PREDICTORS, 6, seed=0)
    import h5py

    with h5py.File(path, "r") as f:
        ds = f["predictors"]
        step = max(1, max(ds.shape[1:3]) // 128)
        sample = ds[:, ::step, ::step, :].reshape(-1, ds.shape[-1]).astype(np.float64)
    return path, {"mean": sample.mean(0).tolist(), "std": np.maximum(sample.std(0), 1e-6).tolist()}


def generate_era5(directory: Path, size_gb: float, y: int, x: int) -> dict[str, Path]:
    """The ERA5-style files of about ``size_gb`` GB as float32 each: float32, int16, int16 + zlib."""
    from maelstrom_run.data.samples import generate_era5_like

    times = max(2, round(size_gb * GB / (y * x * 6 * 4)))
    kinds = {
        "float32": {"packed": False},
        "int16": {"packed": True},
        "int16+zlib": {"packed": True, "zlib": True},
    }
    return {k: generate_era5_like(directory / f"era5_{k}.nc", times, y, x, **v) for k, v in kinds.items()}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size-gb", type=float, default=1.6, help="size of the generated file (default 1.6)")
    parser.add_argument(
        "--grid", default="1161x898", help="y x x of the grid (default: the AP1 grid at 2 km)"
    )
    parser.add_argument("--runs", type=int, default=3, help="measured runs per configuration (>= 3)")
    parser.add_argument("--threads", type=int, default=2, help="threads of the reference and the loader")
    parser.add_argument("--prefetch", type=int, default=2, help="loader.prefetch: fields in flight")
    parser.add_argument("--passes", type=int, default=3, help="passes over the file per run, buffers reused")
    parser.add_argument("--patch", type=int, default=128, help="patch size")
    parser.add_argument("--batch", type=int, default=16, help="patches per batch")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write the file (default: a temp dir)"
    )
    parser.add_argument("--quick", action="store_true", help="a small file (0.15 GB), 3 runs: a smoke test")
    parser.add_argument("--no-cold", action="store_true", help="skip the cold (evicted) measurements")
    parser.add_argument("--keep", action="store_true", help="keep the generated file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return 0

    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(shutil.get_terminal_size((150, 24)).columns, 140))
    y, x = (int(v) for v in args.grid.lower().split("x"))
    if args.quick:
        args.size_gb, y, x = 0.15, 512, 512
    runs = max(3, args.runs)
    base = args.dir or Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(base).free
    if free < 1.5 * args.size_gb * GB:
        console.print(
            f"[red]{base} has {free / GB:.1f} GB free; {args.size_gb:.1f} GB needed (--dir elsewhere)[/]"
        )
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="maelstrom-loader-bench-", dir=base))
    try:
        with console.status(f"generating a {args.size_gb:.2f} GB AP1 file ({y}x{x}) in {workdir}"):
            path, stats = generate(workdir, args.size_gb, y, x)
        with console.status(f"generating ERA5-style files of {args.size_gb / 2:.2f} GB as float32"):
            era5 = generate_era5(workdir, args.size_gb / 2, y, x)
        size = path.stat().st_size
        common = {"file": str(path), "patch": args.patch, "batch": args.batch, "passes": args.passes, **stats}
        configs = [
            ("idle process", "warm", {"kind": "idle"}),
            ("naive (xarray, 1 thread)", "warm", {"kind": "naive"}),
            (f"reference (h5py, {args.threads} threads)", "warm", {"kind": "reference", "threads": args.threads}),
            ("loader threads=1", "warm", {"kind": "loader", "threads": 1, "prefetch": args.prefetch}),
            (f"loader threads={args.threads}", "warm", {"kind": "loader", "threads": args.threads,
                                                         "prefetch": args.prefetch}),
        ]  # fmt: skip
        era5_spec = {"kind": "loader", "layout": ERA5_LAYOUT, "prefetch": args.prefetch, "mean": [0.0] * 5,
                     "std": [1.0] * 5}  # fmt: skip
        configs += [
            (f"ERA5 loader float32, threads={args.threads}", "warm",
             {**era5_spec, "file": str(era5["float32"]), "threads": args.threads}),
            (f"ERA5 loader int16 packed, threads={args.threads}", "warm",
             {**era5_spec, "file": str(era5["int16"]), "threads": args.threads}),
            ("ERA5 loader int16+zlib, threads=1", "warm", {**era5_spec, "file": str(era5["int16+zlib"]), "threads": 1}),
            (f"ERA5 loader int16+zlib, threads={args.threads}", "warm",
             {**era5_spec, "file": str(era5["int16+zlib"]), "threads": args.threads}),
        ]  # fmt: skip
        if not args.no_cold:
            configs += [
                ("O_DIRECT read", "cold", {"kind": "odirect"}),
                (f"reference (h5py, {args.threads} threads)", "cold", {"kind": "reference",
                                                                        "threads": args.threads}),
                (f"loader threads={args.threads}", "cold", {"kind": "loader", "threads": args.threads,
                                                             "prefetch": args.prefetch}),
            ]  # fmt: skip
        with console.status("measuring") as status:
            raw = measure(
                [(label, mode, {**common, **spec}) for label, mode, spec in configs], runs, status.update
            )
        results = {key: summarise(value) for key, value in raw.items()}
    finally:
        if args.keep:
            console.print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    loader_key = f"loader threads={args.threads}"
    ref_key = f"reference (h5py, {args.threads} threads)"
    naive_in = results["naive (xarray, 1 thread)", "warm"]["input"]
    table = Table(
        title=f"AP1 loader: {size / GB:.2f} GB file x {args.passes} passes, patch {args.patch}, batch "
        f"{args.batch}, prefetch {args.prefetch}; median of {runs} rounds of fresh processes after 1 warm-up round ({os.cpu_count()} CPUs)",
        title_justify="left",
    )
    for column in ("configuration", "cache", "input GB/s", "output GB/s", "peak RSS MB", "first batch ms",
                   "vs naive", "vs reference"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("configuration", "cache") else "right")
    for (label, mode), r in results.items():
        if label == "idle process":
            continue
        ref = (ref_key, mode) in raw and not label.startswith("ERA5")
        table.add_row(
            label,
            mode,
            f"{r['input']:.2f}",
            f"{r['output']:.2f}" if r["output"] else "-",
            f"{r['rss'] / MB:.0f}",
            "-" if r["first"] is None else f"{r['first'] * 1e3:.0f}",
            f"{r['input'] / naive_in:.1f}x" if mode == "warm" and not label.startswith("ERA5") else "-",
            f"{paired(raw[label, mode], raw[ref_key, mode], 'read'):.2f}x" if ref else "-",
        )
    console.print(table)

    checks = []
    warm_loader = results[loader_key, "warm"]
    checks.append((f"warm input >= {WARM_TARGET_GBPS} GB/s with threads={args.threads}",
                   warm_loader["input"] >= WARM_TARGET_GBPS, f"{warm_loader['input']:.2f} GB/s"))  # fmt: skip
    ratio = paired(raw[loader_key, "warm"], raw[ref_key, "warm"], "read")
    checks.append((f"warm input >= {REFERENCE_RATIO} x reference", ratio >= REFERENCE_RATIO, f"{ratio:.2f}x"))
    if not args.no_cold:
        direct = results["O_DIRECT read", "cold"]["input"]
        cold = paired(raw[loader_key, "cold"], raw["O_DIRECT read", "cold"], "read")
        checks.append((f"cold input >= {COLD_RATIO} x O_DIRECT ({direct:.2f} GB/s)", cold >= COLD_RATIO,
                       f"{cold:.2f}x"))  # fmt: skip
    extra = warm_loader["extra"]
    idle = results["idle process", "warm"]["rss"]
    fields = extra["buffers"]["fields"]
    bound = (
        idle + fields * extra["field_bytes"] + extra["buffers"]["batches"] * extra["batch_bytes"] + RSS_SLACK
    )
    peak = max(r["rss"] for (label, _), r in results.items() if label.startswith("loader"))
    checks.append((
        f"peak RSS <= idle {idle / MB:.0f} MB + {fields} fields x {extra['field_bytes'] / MB:.0f} MB + "
        f"{extra['buffers']['batches']} batches x {extra['batch_bytes'] / MB:.0f} MB + {RSS_SLACK / MB:.0f} MB",
        peak <= bound, f"{peak / MB:.0f} MB <= {bound / MB:.0f} MB")
    )  # fmt: skip
    float_key = f"ERA5 loader float32, threads={args.threads}", "warm"
    packed = paired(
        raw[f"ERA5 loader int16 packed, threads={args.threads}", "warm"], raw[float_key], "delivered"
    )
    checks.append((f"packed int16 output (decoded float bytes) >= {PACKED_RATIO} x float32 "
                   f"({results[float_key]['output']:.2f} GB/s)", packed >= PACKED_RATIO, f"{packed:.2f}x"))  # fmt: skip
    one_key = "ERA5 loader int16+zlib, threads=1", "warm"
    scaling = paired(
        raw[f"ERA5 loader int16+zlib, threads={args.threads}", "warm"], raw[one_key], "delivered"
    )
    checks.append((f"zlib: threads={args.threads} output >= {ZLIB_SCALING} x threads=1 "
                   f"({results[one_key]['output']:.2f} GB/s)", scaling >= ZLIB_SCALING, f"{scaling:.2f}x"))  # fmt: skip
    failed = False
    for name, ok, value in checks:
        failed |= not ok
        console.print(f"{'[green]PASS[/]' if ok else '[red]FAIL[/]'} {name}: {value}")
    console.print(f"generated files removed: {not args.keep}; next: python {Path(__file__).name} --runs 5")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
