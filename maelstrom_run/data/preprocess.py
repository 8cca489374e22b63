"""AP4 preprocessing: ENS-10 NetCDF files into normalised per-sample arrays, and loaders over both.

A *sample* is one forecast (a date of one year): the ensemble mean and spread of every input
variable at the target's level and lead time (``dataset.step``, 48 h), normalised, followed by
three raw channels the CRPS needs: the ERA5 truth, and the ensemble mean and spread of the
target variable. ``maelstrom data preprocess app=ap4`` (:mod:`maelstrom_run.commands.data`) writes, under
``$MAELSTROM_CACHE/preprocessed/ap4/<target>-<key>/``:

    manifest.json        what was read (files, sizes, times), channels, samples, split; ``complete``
    stats/MMDD.npz       per-file statistics (count, mean, M2 per field and level) of the training years
    stats.npz            mean and std of every ``{v}_mean`` / ``{v}_std`` field at every level
    samples/NNNNN.npy    float32 (channels, latitude, longitude), one file per sample

Statistics come from one streaming pass over the training years (Chan's parallel update of
mean and M2 in float64). Every file is written under a temporary name and renamed, and the work
already on disk is skipped, so an interrupted run resumes where it stopped. The key in the
directory name hashes the source files (names, sizes, modification times) and the settings,
so changed data never mix with old arrays.

:class:`PreprocessedENS10` memory-maps the arrays; :class:`NetCDFENS10` builds the same
samples straight from the NetCDF files (``loader.preprocessed=false``). Both fill a reused
buffer per batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import paths
from ..core.errors import ConfigError
from ..core.rundir import write_atomic
from . import ens10

#: Version of the array format; part of the key.
FORMAT = 1
MANIFEST = "manifest.json"


# -- what to read ------------------------------------------------------------------------------


@dataclass
class Plan:
    """The files, fields and samples of one preprocessing (from the ``dataset`` config)."""

    source: Path
    target: ens10.Target
    step: int
    variables: list[str]
    dates: list[str]
    years: list[int]
    #: Pressure levels in the files (None for surface files).
    levels: list[int] | None
    latitude: np.ndarray
    longitude: np.ndarray
    validation_years: int

    @property
    def kind(self) -> str:
        return self.target.kind

    @property
    def fields(self) -> list[str]:
        return [f"{v}_{stat}" for v in self.variables for stat in ("mean", "std")]

    @property
    def channels(self) -> list[str]:
        return [
            *self.fields,
            f"{self.target.name}_era5",
            f"{self.target.variable}_mean",
            f"{self.target.variable}_std",
        ]

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.channels), len(self.latitude), len(self.longitude)

    @property
    def train_years(self) -> int:
        return len(self.years) - self.validation_years

    def samples(self) -> list[tuple[str, int]]:
        """``(date, year index)``, year by year: the training years first, the validation years last."""
        return [(date, y) for y in range(len(self.years)) for date in self.dates]

    @property
    def n_train(self) -> int:
        return self.train_years * len(self.dates)

    def file(self, kind: str, date: str) -> Path:
        return self.source / ens10.file_name(kind, date)

    def key(self) -> str:
        files = []
        for date in self.dates:
            for kind in (self.kind, "era5"):
                st = self.file(kind, date).stat()
                files.append([ens10.file_name(kind, date), st.st_size, st.st_mtime_ns])
        settings = [
            FORMAT,
            str(self.source),
            self.target.name,
            self.step,
            self.variables,
            self.validation_years,
        ]
        return hashlib.sha256(json.dumps([settings, files]).encode()).hexdigest()[:12]


def _open(path: Path) -> Any:
    import netCDF4

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        nc = netCDF4.Dataset(path)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read it as NetCDF ({exc}); is it truncated? fetch it again"
        ) from None
    nc.set_auto_maskandscale(False)  # decoded by read_values, as xarray decodes
    return nc


def read_values(var: Any, index: Any) -> np.ndarray:
    """``var[index]`` of a netCDF4 variable, CF-decoded into float32 (fill values as NaN)."""
    from .gridded import Decoding

    raw = np.asarray(var[index])
    decoding = Decoding.from_attrs({k: var.getncattr(k) for k in var.ncattrs()}, var.dtype)
    if decoding is None:
        return np.asarray(raw, np.float32)
    out = np.empty(raw.shape, np.float32)
    decoding.apply(raw, out)
    return out


def _require(nc: Any, path: Path, dims: Sequence[str], variables: Sequence[str], what: str) -> None:
    for dim in dims:
        if dim not in nc.dimensions:
            raise ConfigError(f"{path}: no dimension {dim!r} (has {', '.join(nc.dimensions)})")
    for name in variables:
        if name not in nc.variables:
            have = sorted(
                {v.rsplit("_", 1)[0] for v in nc.variables if v.endswith(("_mean", "_std"))}
            ) or sorted(nc.variables)
            shown = name.rsplit("_", 1)[0] if what == "dataset.variables" else name
            raise ConfigError(f"{what}: {shown!r} is not in {path} (it has {', '.join(have)})")


def _source(dataset: Mapping[str, Any], tier: str, cache_dir: Path, target: ens10.Target) -> Path:
    source = dataset.get("source", "sample")
    if source == "sample":
        tiers = dataset.get("tiers") or {}
        if tier not in tiers:
            raise ConfigError(f"dataset.tiers: no sizes for the tier {tier!r} (has {', '.join(tiers)})")
        return ens10.ensure_ap4(cache_dir, tiers[tier], seed=0, kinds=(target.kind,))
    if source == "files":
        path = dataset.get("path")
        if not path or not Path(path).expanduser().is_dir():
            raise ConfigError(f"dataset.path: {path!r} is not a directory of ENS-10 NetCDF files")
        return Path(path).expanduser().absolute()
    raise ConfigError(
        f"dataset.source: {source!r}: the published ENS-10 files are GRIB with the 10 members; turn them "
        "into ensemble mean/std NetCDF (cdo -f nc4 ensmean / ensstd) and use dataset.source=files dataset.path=DIR"
    )


def plan(config: Mapping[str, Any], cache_dir: Path | None = None) -> Plan:
    """The :class:`Plan` of a resolved config (``dataset`` of kind ap4 and ``train.tier``); checks the files."""
    dataset = config["dataset"]
    if dataset.get("kind") != "ap4":
        raise ConfigError(
            f"dataset.kind: {dataset.get('kind')!r}: only AP4 (dataset=ap4) has a preprocessing step"
        )
    target = ens10.target(str(dataset.get("target", "t850")))
    tier = str((config.get("train") or {}).get("tier", "tiny"))
    source = _source(dataset, tier, Path(cache_dir or paths.cache_dir()), target)
    known = ens10.PL_VARIABLES if target.kind == "pl" else ens10.SFC_VARIABLES
    variables = list(dataset.get("variables") or known)
    step = int(dataset.get("step", 48))

    dates = [d for d in ens10.DATES if source.joinpath(ens10.file_name(target.kind, d)).is_file()]
    if not dates:
        raise ConfigError(f"dataset.path: no {ens10.file_name(target.kind, 'MMDD')} files in {source}")
    for date in dates:
        era5 = source / ens10.file_name("era5", date)
        if not era5.is_file():
            raise ConfigError(
                f"{era5}: no such file (the ERA5 truth of {ens10.file_name(target.kind, date)})"
            )

    first = source / ens10.file_name(target.kind, dates[0])
    dims = ["time", "step", "latitude", "longitude"] + (["isobaricInhPa"] if target.kind == "pl" else [])
    with _open(first) as nc:
        _require(
            nc, first, dims, [f"{v}_{s}" for v in variables for s in ("mean", "std")], "dataset.variables"
        )
        _require(nc, first, [], [target.variable + "_mean", target.variable + "_std"], "dataset.target")
        steps = [int(s) for s in nc["step"][:]]
        if step not in steps:
            raise ConfigError(f"dataset.step: {step} h is not in {first} (steps {steps})")
        levels = [int(v) for v in nc["isobaricInhPa"][:]] if target.kind == "pl" else None
        if levels is not None and target.level not in levels:
            raise ConfigError(f"dataset.target: {target.name} needs {target.level} hPa; {first} has {levels}")
        times = nc["time"][:]
        years = [int(ens10.FIRST_YEAR + i) for i in range(len(times))]
        latitude, longitude = np.asarray(nc["latitude"][:]), np.asarray(nc["longitude"][:])
    era5 = source / ens10.file_name("era5", dates[0])
    with _open(era5) as nc:
        _require(nc, era5, ["time", "latitude", "longitude"], [target.name], "dataset.target")
    fraction = float(dataset.get("validation_fraction", 0.1))
    validation_years = min(len(years) - 1, max(1, round(len(years) * fraction))) if len(years) > 1 else 0
    return Plan(source, target, step, variables, dates, years, levels, latitude, longitude, validation_years)


def default_output(p: Plan, cache_dir: Path | None = None) -> Path:
    return Path(cache_dir or paths.cache_dir()) / "preprocessed" / "ap4" / f"{p.target.name}-{p.key()}"


# -- reading one file --------------------------------------------------------------------------


class _Files:
    """Open NetCDF files of a plan, kept open; every read checks the variable and the shape."""

    def __init__(self, p: Plan) -> None:
        self.plan = p
        self._open: dict[Path, Any] = {}
        self.step_index: dict[Path, int] = {}
        self.bytes_read = 0

    def get(self, kind: str, date: str) -> Any:
        path = self.plan.file(kind, date)
        if path not in self._open:
            nc = _open(path)
            if kind != "era5":
                names = [f"{v}_{s}" for v in self.plan.variables for s in ("mean", "std")]
                _require(nc, path, [], names, "dataset.variables")
                steps = [int(s) for s in nc["step"][:]]
                if self.plan.step not in steps:
                    raise ConfigError(f"dataset.step: {self.plan.step} h is not in {path} (steps {steps})")
                self.step_index[path] = steps.index(self.plan.step)
            else:
                _require(nc, path, [], [self.plan.target.name], "dataset.target")
            if len(nc.dimensions["time"]) < len(self.plan.years):
                raise ConfigError(
                    f"{path}: {len(nc.dimensions['time'])} years, expected {len(self.plan.years)}"
                )
            self._open[path] = nc
        return self._open[path]

    def read(self, kind: str, date: str, name: str, index: tuple[Any, ...]) -> np.ndarray:
        nc = self.get(kind, date)
        path = self.plan.file(kind, date)
        try:
            data = read_values(nc[name], index)
        except (RuntimeError, OSError) as exc:
            raise ConfigError(
                f"{path}: cannot read {name} ({exc}); is it truncated? fetch it again"
            ) from None
        self.bytes_read += data.nbytes
        return data

    def close(self) -> None:
        for nc in self._open.values():
            nc.close()
        self._open.clear()


def _level_index(p: Plan) -> int | None:
    return None if p.levels is None else p.levels.index(int(p.target.level or 0))


def read_sample(
    files: _Files, p: Plan, stats: Mapping[str, np.ndarray], sample: tuple[str, int], out: np.ndarray
) -> np.ndarray:
    """Fill ``out`` (channels, lat, lon) with the normalised inputs and the raw truth/mean/spread of one sample."""
    date, y = sample
    path = p.file(p.kind, date)
    files.get(p.kind, date)
    si = files.step_index[path]
    li = _level_index(p)
    index = (y, si) if li is None else (y, si, li)
    mean, std = stats["mean"], stats["std"]
    for c, field in enumerate(p.fields):
        values = files.read(p.kind, date, field, index)
        if values.shape != out.shape[1:]:
            raise ConfigError(f"{path}: {field} has the shape {values.shape}, expected {out.shape[1:]}")
        f = stats["fields"].index(field)
        np.subtract(values, mean[f, li or 0], out=out[c])
        out[c] /= std[f, li or 0]
    n = len(p.fields)
    out[n] = files.read("era5", date, p.target.name, (y,))
    out[n + 1] = files.read(p.kind, date, f"{p.target.variable}_mean", index)
    out[n + 2] = files.read(p.kind, date, f"{p.target.variable}_std", index)
    return out


# -- statistics --------------------------------------------------------------------------------


def _merge(
    a: tuple[np.ndarray, np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Chan et al.: combine (count, mean, M2) of two parts."""
    na, ma, sa = a
    nb, mb, sb = b
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = mb - ma
        mean = np.where(n > 0, ma + delta * (nb / np.maximum(n, 1)), 0.0)
        m2 = sa + sb + delta**2 * (na * nb / np.maximum(n, 1))
    return n, mean, m2


def _file_stats(files: _Files, p: Plan, date: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, mean, M2), each (fields, levels), of one file over the training years."""
    levels = len(p.levels) if p.levels is not None else 1
    shape = (len(p.fields), levels)
    acc = (np.zeros(shape), np.zeros(shape), np.zeros(shape))
    files.get(p.kind, date)
    si = files.step_index[p.file(p.kind, date)]
    for y in range(p.train_years):
        part_n, part_mean, part_m2 = np.zeros(shape), np.zeros(shape), np.zeros(shape)
        for f, field in enumerate(p.fields):
            values = files.read(p.kind, date, field, (y, si)).astype(np.float64)
            values = values.reshape(levels, -1)
            valid = ~np.isnan(values)  # fill values decoded as NaN are no data
            part_n[f] = valid.sum(axis=1)
            part_mean[f] = np.where(valid, values, 0).sum(axis=1) / np.maximum(part_n[f], 1)
            part_m2[f] = np.where(valid, (values - part_mean[f][:, None]) ** 2, 0).sum(axis=1)
        acc = _merge(acc, (part_n, part_mean, part_m2))
    return acc


def _save_npz(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def load_stats(output: Path) -> dict[str, Any]:
    with np.load(output / "stats.npz") as z:
        return {
            "fields": [str(f) for f in z["fields"]],
            "mean": z["mean"],
            "std": z["std"],
            "count": z["count"],
        }


def compute_stats(
    p: Plan, output: Path, files: _Files | None = None, advance: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Mean and std of every field at every level over the training years; resumable per file."""
    if (output / "stats.npz").is_file():
        return load_stats(output)
    own = files is None
    files = files or _Files(p)
    try:
        levels = len(p.levels) if p.levels is not None else 1
        shape = (len(p.fields), levels)
        total = (np.zeros(shape), np.zeros(shape), np.zeros(shape))
        for date in p.dates:
            part = output / "stats" / f"{date}.npz"
            if not part.is_file():
                n, mean, m2 = _file_stats(files, p, date)
                _save_npz(part, count=n, mean=mean, m2=m2)
            with np.load(part) as z:
                total = _merge(total, (z["count"], z["mean"], z["m2"]))
            if advance:
                advance(1)
    finally:
        if own:
            files.close()
    count, mean, m2 = total
    std = np.sqrt(m2 / np.maximum(count, 1))
    std = np.where(std > 0, std, 1.0)  # a constant field normalises to 0, not NaN
    _save_npz(output / "stats.npz", fields=np.array(p.fields), mean=mean, std=std, count=count)
    return load_stats(output)


# -- preprocessing -----------------------------------------------------------------------------


@dataclass
class Result:
    output: Path
    samples: int
    written: int
    seconds: float
    stats_seconds: float
    bytes_written: int


def _manifest(p: Plan, key: str, complete: bool, **extra: Any) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "app": "ap4",
        "key": key,
        "source": str(p.source),
        "target": p.target.name,
        "level": p.target.level,
        "step": p.step,
        "variables": p.variables,
        "channels": p.channels,
        "shape": list(p.shape),
        "years": p.years,
        "dates": p.dates,
        "train": p.n_train,
        "validation": len(p.samples()) - p.n_train,
        "samples": [{"date": d, "year": p.years[y]} for d, y in p.samples()],
        "latitude": p.latitude.tolist(),
        "longitude": p.longitude.tolist(),
        "complete": complete,
        **extra,
    }


def _clean_tmp(directory: Path) -> None:
    """Remove temporary files left by processes that no longer run."""
    if not directory.is_dir():
        return
    for tmp in directory.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        alive = False
        if pid.isdigit():
            try:
                os.kill(int(pid), 0)
                alive = int(pid) != os.getpid()
            except (ProcessLookupError, PermissionError):
                alive = False
        if not alive:
            tmp.unlink(missing_ok=True)


#: ``progress(phase, done, total, mb_per_s)``: how far a phase (``statistics`` over the dates,
#: then ``samples``) is; called with ``done=0`` when a phase starts. ``mb_per_s``: the write rate
#: of the samples so far (None for the statistics).
Progress = Callable[[str, int, int, "float | None"], None]


def preprocess(
    p: Plan,
    output: Path | None = None,
    *,
    progress: Progress | None = None,
    on_sample: Callable[[int], None] | None = None,
) -> Result:
    """Write the statistics and the normalised samples of ``p`` into ``output``; skip what is done.

    ``progress``: told how far each phase is (see :data:`Progress`). ``on_sample(index)`` is called
    after each sample written (not for those already there).
    """
    start = time.perf_counter()
    key = p.key()
    output = Path(output or default_output(p))
    manifest_path = output / MANIFEST
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except ValueError:
            old = {}
        if old.get("key") != key:
            raise ConfigError(
                f"{output}: holds arrays of other data or settings (key {old.get('key')}, now {key}); "
                "choose another output directory or delete it"
            )
        if old.get("complete"):
            return Result(output, len(old["samples"]), 0, time.perf_counter() - start, 0.0, 0)
    output.mkdir(parents=True, exist_ok=True)
    (output / "samples").mkdir(exist_ok=True)
    for directory in (output, output / "stats", output / "samples"):
        _clean_tmp(directory)
    write_atomic(manifest_path, json.dumps(_manifest(p, key, False), indent=1))

    samples = p.samples()
    files = _Files(p)
    written = bytes_written = 0
    try:
        t0 = time.perf_counter()
        if progress:
            progress("statistics", 0, len(p.dates), None)
        counted = 0

        def stats_done(n: int) -> None:
            nonlocal counted
            counted += n
            progress("statistics", counted, len(p.dates), None)

        stats = compute_stats(p, output, files, stats_done if progress else None)
        stats_seconds = time.perf_counter() - t0
        if progress:
            progress("samples", 0, len(samples), None)
        buffer = np.empty(p.shape, np.float32)
        t1 = time.perf_counter()
        for i, sample in enumerate(samples):
            path = output / "samples" / f"{i:05d}.npy"
            if not path.is_file():
                read_sample(files, p, stats, sample, buffer)
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, buffer)
                os.replace(tmp, path)
                written += 1
                bytes_written += buffer.nbytes
                if on_sample:
                    on_sample(i)
            if progress:
                rate = bytes_written / 1e6 / max(time.perf_counter() - t1, 1e-9)
                progress("samples", i + 1, len(samples), rate)
    finally:
        files.close()
    seconds = time.perf_counter() - start
    extra = {"seconds": round(seconds, 3), "stats_seconds": round(stats_seconds, 3)}
    write_atomic(manifest_path, json.dumps(_manifest(p, key, True, **extra), indent=1))
    return Result(output, len(samples), written, seconds, stats_seconds, bytes_written)


# -- loaders -----------------------------------------------------------------------------------


class _Loader:
    """Shared by both loaders: a split of the samples and batches into a reused buffer."""

    shape: tuple[int, int, int]
    indices: list[int]

    def __len__(self) -> int:
        return len(self.indices)

    def _fill(self, index: int, out: np.ndarray) -> None:
        raise NotImplementedError

    def __getitem__(self, i: int) -> np.ndarray:
        """One sample (channels, lat, lon): a PyTorch map-style dataset."""
        out = np.empty(self.shape, np.float32)
        self._fill(self.indices[i], out)
        return out

    def batch(self, positions: Sequence[int], out: np.ndarray | None = None) -> np.ndarray:
        """Samples at ``positions`` of this split, ``(batch, channels, lat, lon)``, in ``out`` when given."""
        if out is None or out.shape[0] < len(positions):
            out = np.empty((len(positions), *self.shape), np.float32)
        for b, i in enumerate(positions):
            self._fill(self.indices[i], out[b])
        return out[: len(positions)]

    def batch_points(
        self, positions: Sequence[int], points: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        """Only the grid points ``points`` (flat indices): ``(batch, channels, points)``."""
        self._full = self.batch(positions, out=getattr(self, "_full", None))
        out = _points_buffer(out, len(positions), self.shape[0], len(points))
        np.take(self._full.reshape(len(positions), self.shape[0], -1), points, axis=2, out=out)
        return out


def _points_buffer(out: np.ndarray | None, batch: int, channels: int, points: int) -> np.ndarray:
    if out is None or out.shape[0] < batch or out.shape[2] != points:
        out = np.empty((batch, channels, points), np.float32)
    return out[:batch]


class PreprocessedENS10(_Loader):
    """Memory-mapped samples of a completed :func:`preprocess` (``split``: train, validation or all)."""

    def __init__(self, output: Path, split: str = "train") -> None:
        output = Path(output)
        try:
            self.manifest = json.loads((output / MANIFEST).read_text())
        except (OSError, ValueError):
            raise ConfigError(
                f"{output}: no preprocessed AP4 arrays; run maelstrom data preprocess app=ap4"
            ) from None
        if not self.manifest.get("complete"):
            raise ConfigError(
                f"{output}: preprocessing was interrupted; run maelstrom data preprocess app=ap4 again"
            )
        n, n_train = len(self.manifest["samples"]), int(self.manifest["train"])
        self.indices = {
            "train": list(range(n_train)),
            "validation": list(range(n_train, n)),
            "all": list(range(n)),
        }[split]
        self.shape = tuple(self.manifest["shape"])  # type: ignore[assignment]
        self.channels = list(self.manifest["channels"])
        self.latitude = np.asarray(self.manifest["latitude"])
        self.longitude = np.asarray(self.manifest["longitude"])
        self._maps = {i: np.load(output / "samples" / f"{i:05d}.npy", mmap_mode="r") for i in self.indices}
        self.bytes_read = 0

    def _fill(self, index: int, out: np.ndarray) -> None:
        out[...] = self._maps[index]
        self.bytes_read += out.nbytes

    def batch_points(
        self, positions: Sequence[int], points: np.ndarray, out: np.ndarray | None = None
    ) -> np.ndarray:
        out = _points_buffer(out, len(positions), self.shape[0], len(points))
        for b, i in enumerate(positions):
            flat = self._maps[self.indices[i]].reshape(self.shape[0], -1)
            np.take(flat, points, axis=1, out=out[b])
            self.bytes_read += out[b].nbytes
        return out


class NetCDFENS10(_Loader):
    """The same samples as :class:`PreprocessedENS10`, read from the NetCDF files and normalised on the fly."""

    def __init__(self, p: Plan, stats: Mapping[str, Any], split: str = "train") -> None:
        self.plan, self.stats = p, stats
        self._samples = p.samples()
        n = len(self._samples)
        self.indices = {
            "train": list(range(p.n_train)),
            "validation": list(range(p.n_train, n)),
            "all": list(range(n)),
        }[split]
        self.shape = p.shape
        self.channels = p.channels
        self.latitude, self.longitude = p.latitude, p.longitude
        self._files = _Files(p)

    @property
    def bytes_read(self) -> int:
        return self._files.bytes_read

    def _fill(self, index: int, out: np.ndarray) -> None:
        read_sample(self._files, self.plan, self.stats, self._samples[index], out)

    def close(self) -> None:
        self._files.close()
