"""Gridded loader for AP1 forecast files: read -> select -> normalise -> feature -> patch -> batch.

The files are in the climetlab-maelstrom-yr layout (see :mod:`maelstrom_run.data.samples`):
``predictors(leadtime, y, x, predictor)``, ``target_mean(leadtime, y, x)``,
``static_predictors(y, x, static_predictor)``. The unit of work is a *field*: one leadtime of
one file, ``(y, x, predictor)``.

- **read**: uncompressed contiguous variables (the layout of the AP1 files) are read with
  plain sequential ``os.preadv`` calls at the offset h5py reports, straight into a reused buffer:
  no HDF5 lock, the GIL released, one request per variable of a field (as h5py's ``read_direct``
  does), the kernel's normal read-ahead doing the rest on cold files (explicit ``WILLNEED`` hints
  measured slower). Chunked or compressed variables fall back to h5py's
  ``read_direct`` (HDF5 serialises those reads).
- **select**: the predictors named in ``loader.predictors`` (all when unset).
- **normalise**: per predictor, with means and standard deviations computed at run time from a
  subsample of the files (``loader.normalise``); nothing is baked into the files. Each patch is
  normalised in the output batch right after its copy, while it is in the CPU cache.
- **feature**: the static predictors, the coordinates (latitude, longitude) and the leadtime as
  extra input channels (``loader.features``); the target is ``target_mean`` minus the raw
  forecast ``air_temperature_2m`` (``loader.target: difference``) or ``target_mean`` itself.
- **patch**: square patches of ``loader.patch_size`` tiling each field (a random tiling origin
  and order when shuffling); no patch size means the whole field.
- **batch**: ``batch_size`` patches into one of a ring of preallocated output buffers.

``loader.threads`` worker threads run the reads and the batch assembly; at most
``loader.prefetch`` fields are in memory at once (more only when one batch needs more fields).
A batch handed out stays valid until the next one is requested: its buffer is then reused.
Throughput is counted as bytes read from storage and bytes delivered (GB = 1e9 bytes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core.errors import ConfigError

GB = 1e9
#: The raw forecast that ``target: difference`` subtracts from the analysis.
BASE = "air_temperature_2m"
FEATURES = ("static_predictors", "coordinates", "leadtime")
TARGETS = ("difference", "mean")
#: Variables every AP1 file must have, with their dimensions.
LAYOUT = {
    "predictors": ("leadtime", "y", "x", "predictor"),
    "target_mean": ("leadtime", "y", "x"),
    "static_predictors": ("y", "x", "static_predictor"),
    "leadtime": ("leadtime",),
    "predictor": ("predictor",),
}


#: Rows of a patch go over in blocks of about this size (copy, then work on the copy in the cache).
_BLOCK_BYTES = 1 << 20


class LoaderError(ValueError):
    """An input file that cannot be loaded; the message names the file and the key."""


@dataclass(frozen=True)
class GriddedOptions:
    """What the loader does; :meth:`from_config` reads them from the ``loader`` config group."""

    batch_size: int
    patch_size: int | None = None
    threads: int = 2
    prefetch: int = 2
    shuffle: bool = True
    normalise: bool = True
    features: tuple[str, ...] = ()
    predictors: tuple[str, ...] | None = None
    target: str = "difference"
    seed: int = 0
    #: Patch sides (and the crop of whole fields) must divide by this (a U-Net's 2**levels).
    multiple: int = 1

    def __post_init__(self) -> None:
        def bad(key: str, message: str) -> ConfigError:
            return ConfigError(f"loader.{key}: {message}")

        for key in ("threads", "prefetch"):
            value = getattr(self, key)
            if not isinstance(value, int) or value < 1:
                raise bad(key, f"{value!r} must be an integer >= 1")
        if self.batch_size < 1:
            raise ConfigError(f"train.batch_size: {self.batch_size} must be >= 1")
        if self.patch_size is not None and (self.patch_size < 1 or self.patch_size % self.multiple):
            raise bad("patch_size", f"{self.patch_size} must be positive and divide by {self.multiple}")
        if unknown := [f for f in self.features if f not in FEATURES]:
            raise bad("features", f"unknown {', '.join(map(repr, unknown))}; valid are {', '.join(FEATURES)}")
        if len(set(self.features)) != len(self.features):
            raise bad("features", f"{list(self.features)} names a feature twice")
        if self.target not in TARGETS:
            raise bad("target", f"{self.target!r} is not one of {', '.join(TARGETS)}")
        if self.predictors is not None and not self.predictors:
            raise bad("predictors", "an empty list selects nothing; leave it null for all predictors")

    @classmethod
    def from_config(cls, loader: Any, batch_size: int, seed: int = 0, **overrides: Any) -> GriddedOptions:
        get = loader.get if hasattr(loader, "get") else lambda key, default=None: default
        predictors = get("predictors", None)
        values: dict[str, Any] = {
            "batch_size": int(batch_size),
            "patch_size": get("patch_size", None),
            "threads": get("threads", 2),
            "prefetch": get("prefetch", 2),
            "shuffle": bool(get("shuffle", True)),
            "normalise": bool(get("normalise", True)),
            "features": tuple(get("features", None) or ()),
            "predictors": None if predictors is None else tuple(predictors),
            "target": get("target", "difference"),
            "seed": int(seed),
        }
        values.update(overrides)
        return cls(**values)


@dataclass
class Stats:
    """Mean and standard deviation per channel of the predictors and static predictors."""

    predictors: tuple[np.ndarray, np.ndarray]
    static_predictors: tuple[np.ndarray, np.ndarray]
    #: Bytes read to compute them.
    nbytes: int = 0


class Batch(NamedTuple):
    #: ``(batch, y, x, channel)`` float32; valid until the next batch is requested.
    inputs: np.ndarray
    #: ``(batch, y, x)`` float32.
    target: np.ndarray


@dataclass
class Counters:
    """What a loader did; :meth:`GriddedLoader.take_counts` hands them out and starts anew."""

    bytes_read: int = 0
    bytes_delivered: int = 0
    batches: int = 0
    fields: int = 0


def _dims(path: Path, f: Any, name: str) -> tuple[str, ...]:
    if name not in f:
        raise LoaderError(
            f"{path}: variable {name!r} not found; AP1 files have {', '.join(LAYOUT)} (found {', '.join(f)})"
        )
    import h5py

    ds = f[name]
    if ds.ndim == 1 and h5py.h5ds.is_scale(ds.id):  # a coordinate variable: its own dimension
        return (name,)
    try:
        return tuple(ds.dims[i][0].name.lstrip("/") for i in range(ds.ndim))
    except (IndexError, RuntimeError, KeyError):  # a variable without dimension scales
        raise LoaderError(f"{path}: variable {name!r} has no named dimensions (not NetCDF4?)") from None


def _open(path: Path) -> Any:
    import h5py

    if not path.exists():
        raise LoaderError(f"{path}: no such file; check dataset.path, or fetch the dataset again")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(", 1)[-1].rstrip(")") or str(exc)
        raise LoaderError(
            f"{path}: not a readable NetCDF4/HDF5 file ({reason}); it may be truncated, fetch it again"
        ) from None


@dataclass
class _Variable:
    """Where one variable's leadtime slabs are: a raw byte offset, or only h5py."""

    name: str
    shape: tuple[int, ...]
    #: Byte offset of the data when they can be read raw (contiguous, uncompressed, little-endian).
    offset: int | None
    #: Bytes in storage per leadtime slab.
    slab_bytes: int


def _variable(path: Path, f: Any, name: str, file_size: int) -> _Variable:
    ds = f[name]
    if ds.dtype != np.dtype("<f4"):
        raise LoaderError(f"{path}: variable {name!r} is {ds.dtype}, expected float32")
    slab = int(np.prod(ds.shape[1:])) * 4
    offset = ds.id.get_offset() if ds.chunks is None and ds.compression is None else None
    if offset is not None and offset + slab * ds.shape[0] > file_size:
        raise LoaderError(
            f"{path}: variable {name!r} ends at byte {offset + slab * ds.shape[0]} but the file has "
            f"{file_size} bytes; it is truncated, fetch it again"
        )
    storage = slab if offset is not None else ds.id.get_storage_size() // max(1, ds.shape[0])
    return _Variable(name, tuple(ds.shape), offset, int(storage))


class AP1Files:
    """The layout of a set of AP1 files, checked once: names, shapes, offsets, static fields."""

    def __init__(self, files: Sequence[str | os.PathLike[str]]) -> None:
        self.paths = [Path(p) for p in files]
        if not self.paths:
            raise LoaderError("no AP1 files given; check dataset.path")
        self.variables: list[dict[str, _Variable]] = []
        for path in self.paths:
            with _open(path) as f:
                dims = {name: _dims(path, f, name) for name in LAYOUT}
                for name, expected in LAYOUT.items():
                    if dims[name] != expected:
                        raise LoaderError(
                            f"{path}: variable {name!r} has dimensions ({', '.join(dims[name])}), "
                            f"expected ({', '.join(expected)})"
                        )
                size = path.stat().st_size
                self.variables.append({n: _variable(path, f, n, size) for n in ("predictors", "target_mean")})
                shape = self.variables[-1]["predictors"].shape
                if len(self.variables) == 1:
                    self.shape = shape  # (leadtime, y, x, predictor)
                    self.predictor_names = list(f["predictor"].asstr()[:])
                    self.leadtimes = np.asarray(f["leadtime"][:], dtype=np.float64)
                    self.static = np.asarray(f["static_predictors"][:], dtype=np.float32)
                    self.static_names = (
                        list(f["static_predictor"].asstr()[:]) if "static_predictor" in f else []
                    )
                    self.latlon = (
                        np.stack([f["latitude"][:], f["longitude"][:]], axis=-1).astype(np.float32)
                        if "latitude" in f and "longitude" in f
                        else None
                    )
                elif shape != self.shape:
                    raise LoaderError(
                        f"{path}: predictors has shape {shape}, but {self.paths[0].name} has {self.shape}; "
                        "the files of one loader must share the grid"
                    )

    @property
    def field_bytes(self) -> int:
        """Bytes of one field (predictors and target of one leadtime) in memory."""
        _, ny, nx, p = self.shape
        return ny * nx * (p + 1) * 4

    def statistics(self, max_files: int = 8) -> Stats:
        """Means and standard deviations from a subsample of the files (about 128 points a side)."""
        import h5py

        values, nbytes = [], 0
        for path in self.paths[:: max(1, -(-len(self.paths) // max_files))]:
            with h5py.File(path, "r") as f:
                ds = f["predictors"]
                step = max(1, max(ds.shape[1:3]) // 128)
                values.append(ds[:, ::step, ::step, :].reshape(-1, ds.shape[-1]))
                nbytes += values[-1].nbytes
        predictors = np.concatenate(values)
        static = self.static.reshape(-1, self.static.shape[-1])

        def moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a = a.astype(np.float64)
            return a.mean(axis=0).astype(np.float32), np.maximum(a.std(axis=0), 1e-6).astype(np.float32)

        return Stats(moments(predictors), moments(static), nbytes + self.static.nbytes)


class _Reader:
    """Reads fields of one file into given buffers; one per file, shared by the worker threads."""

    def __init__(self, path: Path, variables: dict[str, _Variable]) -> None:
        self.path = path
        self.variables = variables
        self.fd: int | None = None
        self.h5: Any = None
        self.lock = threading.Lock()

    def read(self, name: str, lead: int, out: np.ndarray) -> int:
        var = self.variables[name]
        if var.offset is None:
            with self.lock:
                if self.h5 is None:
                    self.h5 = _open(self.path)
            self.h5[name].read_direct(out, np.s_[lead])
            return var.slab_bytes
        with self.lock:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDONLY)
        view = memoryview(out).cast("B")
        start, done = var.offset + lead * var.slab_bytes, 0
        while done < var.slab_bytes:
            n = os.preadv(self.fd, [view[done:]], start + done)
            if n <= 0:
                raise LoaderError(
                    f"{self.path}: {name} ends early at byte {start + done}; the file is truncated"
                )
            done += n
        return var.slab_bytes

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.h5 is not None:
            self.h5.close()
            self.h5 = None


@dataclass
class _Plan:
    """One pass: the fields in order and the patches of every batch."""

    fields: list[tuple[int, int]]  # (file, leadtime)
    patches: np.ndarray  # (patch, 3): field position, y0, x0
    batch_size: int
    #: first and last batch using each field
    first: np.ndarray = field(init=False)
    last: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        batch_of = np.arange(len(self.patches)) // self.batch_size
        n = len(self.fields)
        self.first = np.full(n, np.iinfo(np.int64).max)
        self.last = np.full(n, -1)
        np.minimum.at(self.first, self.patches[:, 0], batch_of)
        np.maximum.at(self.last, self.patches[:, 0], batch_of)

    @property
    def batches(self) -> int:
        return -(-len(self.patches) // self.batch_size)

    def tasks(self, prefetch: int, limit: int) -> tuple[list[tuple[str, int]], int]:
        """``("read", field)`` and ``("batch", k)`` for the first ``limit`` batches, in the order the
        workers take them; and the most fields in memory when they run one after another.

        Reads come as early as ``prefetch`` fields in memory allow, and never later than the
        first batch that needs them.
        """
        order = [
            f
            for f in sorted(range(len(self.fields)), key=lambda f: (self.first[f], f))
            if self.first[f] < limit
        ]
        ends = np.bincount(self.last[self.last < limit], minlength=limit)
        out: list[tuple[str, int]] = []
        i = live = peak = 0
        for k in range(limit):
            while i < len(order) and (self.first[order[i]] <= k or live < prefetch):
                out.append(("read", order[i]))
                i += 1
                live += 1
                peak = max(peak, live)
            out.append(("batch", k))
            live -= int(ends[k])
        return out, peak


class _Buffers:
    """A field's predictors and target."""

    def __init__(self, ny: int, nx: int, p: int) -> None:
        # first touched by the first read into them, then reused on every pass
        self.predictors = np.empty((ny, nx, p), np.float32)
        self.target = np.empty((ny, nx), np.float32)


class GriddedLoader:
    """Batches of patches of AP1 files; iterate it for one pass (``iter_batches`` for more).

    ``stats`` normalises with given statistics (those of the training files for a validation
    loader); by default they are computed from the files when ``normalise`` is on.
    """

    def __init__(
        self, files: Sequence[str | os.PathLike[str]], options: GriddedOptions, stats: Stats | None = None
    ) -> None:
        self.options = options
        self.layout = AP1Files(files)
        leads, ny, nx, _ = self.layout.shape
        names = self.layout.predictor_names
        first = self.layout.paths[0]
        wanted = list(options.predictors) if options.predictors is not None else names
        if missing := [n for n in wanted if n not in names]:
            raise LoaderError(
                f"{first}: loader.predictors: {', '.join(map(repr, missing))} not in the file's predictor "
                f"variable ({', '.join(names)})"
            )
        if options.target == "difference" and BASE not in names:
            raise LoaderError(
                f"{first}: loader.target difference needs the predictor {BASE!r}, not in the file"
            )
        if "coordinates" in options.features and self.layout.latlon is None:
            raise LoaderError(
                f"{first}: loader.features coordinates needs variables 'latitude' and 'longitude'"
            )
        self.selected = np.array([names.index(n) for n in wanted])
        self._selected_slice = (
            slice(int(self.selected[0]), int(self.selected[-1]) + 1)
            if np.array_equal(self.selected, np.arange(self.selected[0], self.selected[-1] + 1))
            else None
        )
        self.base = names.index(BASE) if BASE in names else None
        m = options.multiple
        if options.patch_size is None:
            self.patch = (ny - ny % m, nx - nx % m)
        elif options.patch_size > min(ny, nx):
            raise ConfigError(f"loader.patch_size: {options.patch_size} does not fit the {ny}x{nx} grid")
        else:
            self.patch = (options.patch_size, options.patch_size)
        if min(self.patch) < 1:
            raise ConfigError(
                f"loader.patch_size: the {ny}x{nx} grid is smaller than {m}, the multiple needed"
            )
        self.tiles = (ny // self.patch[0], nx // self.patch[1])
        if options.normalise and stats is None:
            stats = self.layout.statistics()
        self.stats = stats if options.normalise else None
        self._extra = self._features()
        self.channels = len(self.selected) + self._extra.shape[-1] + ("leadtime" in options.features)
        self.counters = Counters()
        #: Seconds from the start of the latest pass to its first batch.
        self.first_batch_s = 0.0
        if self.stats is not None:
            self.counters.bytes_read += self.stats.nbytes
        self._lead_values = self._leadtime_values()
        if self.stats is not None:
            mean, std = (a[self.selected].astype(np.float64) for a in self.stats.predictors)
            # x * scale + shift over (x, predictor) rows of a patch: one long inner loop per row
            self._scale = np.tile(1 / std, (self.patch[1], 1)).astype(np.float32)
            self._shift = np.tile(-mean / std, (self.patch[1], 1)).astype(np.float32)
        self._pool: list[_Buffers] = []
        self._ring: list[Batch] = []
        self._readers = [_Reader(p, v) for p, v in zip(self.layout.paths, self.layout.variables, strict=True)]
        self._lock = threading.Lock()
        self._passes = 0
        self.patches_per_pass = len(self.layout.paths) * leads * self.tiles[0] * self.tiles[1]

    # -- features ------------------------------------------------------------------------------

    def _features(self) -> np.ndarray:
        """Extra channels that do not depend on the field: static predictors, coordinates."""
        _, ny, nx, _ = self.layout.shape
        parts = []
        if "static_predictors" in self.options.features:
            static = self.layout.static
            if self.stats is not None:
                mean, std = self.stats.static_predictors
                static = (static - mean) / std
            parts.append(static)
        if "coordinates" in self.options.features:
            latlon = self.layout.latlon
            if self.stats is not None:
                flat = latlon.reshape(-1, 2).astype(np.float64)
                latlon = (latlon - flat.mean(axis=0)) / np.maximum(flat.std(axis=0), 1e-6)
            parts.append(latlon)
        if not parts:
            return np.empty((ny, nx, 0), np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=-1), dtype=np.float32)

    def _leadtime_values(self) -> np.ndarray:
        hours = self.layout.leadtimes
        if self.stats is None:
            return (hours / 24).astype(np.float32)  # days
        return ((hours - hours.mean()) / max(float(hours.std()), 1e-6)).astype(np.float32)

    # -- plan ----------------------------------------------------------------------------------

    def plan(self, seed: int) -> _Plan:
        """The fields and patches of one pass: with ``shuffle`` the fields in random order and in
        each as many patches as tiles fit, at random places; else the tiles from the corner."""
        opts = self.options
        leads, ny, nx, _ = self.layout.shape
        (py, px), (rows, cols) = self.patch, self.tiles
        fields = [(f, lead) for f in range(len(self.layout.paths)) for lead in range(leads)]
        rng = np.random.default_rng([opts.seed, seed])
        per_field = rows * cols
        patches = np.empty((len(fields) * per_field, 3), np.int64)
        patches[:, 0] = np.repeat(np.arange(len(fields)), per_field)
        if opts.shuffle:
            fields = [fields[i] for i in rng.permutation(len(fields))]
            patches[:, 1] = rng.integers(0, ny - py + 1, len(patches))
            patches[:, 2] = rng.integers(0, nx - px + 1, len(patches))
            # patches are mixed within groups of fields that are in memory together
            group = max(1, opts.prefetch // 2) * per_field
            for start in range(0, len(patches), group):
                chunk = patches[start : start + group]
                patches[start : start + group] = chunk[rng.permutation(len(chunk))]
        else:
            patches[:, 1] = np.tile(np.repeat(np.arange(rows) * py, cols), len(fields))
            patches[:, 2] = np.tile(np.tile(np.arange(cols) * px, rows), len(fields))
        return _Plan(fields, patches, opts.batch_size)

    # -- buffers -------------------------------------------------------------------------------

    def _ensure_buffers(self, fields: int) -> None:
        _, ny, nx, p = self.layout.shape
        while len(self._pool) < fields:
            self._pool.append(_Buffers(ny, nx, p))
        ring = self.options.threads + 1  # one held by the consumer, one assembled per thread
        shape = (self.options.batch_size, *self.patch)
        while len(self._ring) < ring:
            self._ring.append(
                Batch(np.empty((*shape, self.channels), np.float32), np.empty(shape, np.float32))
            )

    @property
    def buffers(self) -> dict[str, int]:
        """How many field buffers and output buffers the loader holds (reused on every pass)."""
        return {"fields": len(self._pool), "batches": len(self._ring)}

    @property
    def batch_bytes(self) -> int:
        return self._ring[0].inputs.nbytes + self._ring[0].target.nbytes if self._ring else 0

    # -- iteration -----------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Batch]:
        return self.iter_batches()

    def iter_batches(self, steps: int | None = None) -> Iterator[Batch]:
        """Batches of one pass, or exactly ``steps`` batches (passes continue one after another)."""
        delivered = 0
        while steps is None or delivered < steps:
            with self._lock:
                seed = self._passes
                self._passes += 1
            plan = self.plan(seed)
            limit = plan.batches if steps is None else min(plan.batches, steps - delivered)
            run = _Pass(self, plan, limit)
            try:
                for batch in run:
                    delivered += 1
                    yield batch
            finally:
                run.close()
            if steps is None or limit == 0:
                return

    def take_counts(self) -> dict[str, float]:
        """Counters since the last call (``bytes_read``, ``bytes_delivered``, ``batches``, ``fields``)."""
        with self._lock:
            c, self.counters = self.counters, Counters()
        return {"bytes_read": c.bytes_read, "bytes_delivered": c.bytes_delivered, "batches": c.batches,
                "fields": c.fields}  # fmt: skip

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for key, value in amounts.items():
                setattr(self.counters, key, getattr(self.counters, key) + value)

    def close(self) -> None:
        for reader in self._readers:
            reader.close()

    def __enter__(self) -> GriddedLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the stages ------------------------------------------------------------------------------

    def _read(self, where: tuple[int, int], buf: _Buffers) -> int:
        """read: the raw field into ``buf``; returns bytes read."""
        index, lead = where
        reader = self._readers[index]
        nbytes = reader.read("predictors", lead, buf.predictors)
        return nbytes + reader.read("target_mean", lead, buf.target)

    def _assemble(self, plan: _Plan, k: int, rows: np.ndarray, out: Batch, buf: _Buffers) -> None:
        """select -> normalise -> patch -> feature -> batch: the patches ``rows`` of batch ``k``
        (all from one field, in ``buf``) into ``out``.

        A patch goes over in blocks of rows of about 1 MB (half a core's L2): each block is copied into ``out``
        (a plain memory copy), and the target difference and the normalisation then work on the
        copy while it is in the core's cache. So the field is read once and ``out`` written
        once from memory's point of view, and only the regions delivered are normalised.
        """
        (py, px), sel = self.patch, self._selected_slice
        scale, shift = (self._scale, self._shift) if self.stats is not None else (None, None)
        patches = plan.patches[k * plan.batch_size : (k + 1) * plan.batch_size]
        n_sel, n_extra = len(self.selected), self._extra.shape[-1]
        with_lead = "leadtime" in self.options.features
        difference = self.options.target == "difference"
        base = (
            int(np.flatnonzero(self.selected == self.base)[0])
            if difference and self.base in self.selected
            else None
        )
        block = max(1, _BLOCK_BYTES // (px * n_sel * 4))
        for n in rows.tolist():
            pos, row, col = patches[n]
            y0, x0 = int(row), int(col)
            inputs, target = out.inputs[n], out.target[n]
            for r in range(0, py, block):
                r1 = min(py, r + block)
                window = (slice(y0 + r, y0 + r1), slice(x0, x0 + px))
                source = buf.predictors[window]
                dest = inputs[r:r1, :, :n_sel]
                if sel is not None:
                    dest[...] = source[..., sel]
                else:
                    for j, i in enumerate(self.selected):
                        dest[..., j] = source[..., i]
                if difference:  # the raw forecast: from the copy, in the cache, before normalising
                    raw = dest[..., base] if base is not None else source[..., self.base]
                    np.subtract(buf.target[window], raw, out=target[r:r1])
                else:
                    target[r:r1] = buf.target[window]
                if scale is not None:
                    np.multiply(dest, scale, out=dest)
                    np.add(dest, shift, out=dest)
            if n_extra:
                inputs[..., n_sel : n_sel + n_extra] = self._extra[y0 : y0 + py, x0 : x0 + px]
            if with_lead:
                inputs[..., -1] = self._lead_values[plan.fields[pos][1]]


class _Pass:
    """One pass of a loader: worker threads take the plan's tasks, each the earliest one ready.

    The tasks are the reads of the fields and the *parts* of the batches: the patches of batch
    ``k`` that come from field ``f``, so a field's buffer is free as soon as its own patches are
    copied, whatever other fields its batches need. A read is ready when a field buffer is free
    and the reads before it have theirs; a part when its field is read and output buffer
    ``k % ring`` is given back (the consumer gives batch ``k - 1`` back when it asks for batch
    ``k``). A worker never waits holding a task: it takes the earliest ready task in the order
    the tasks run one after another, or waits until one is ready. In that order every field in
    memory is one the order has in memory too, and there are at least as many field buffers as
    it needs, so some task is always ready until the consumer must act.
    """

    def __init__(self, loader: GriddedLoader, plan: _Plan, limit: int) -> None:
        self.loader, self.plan, self.limit = loader, plan, limit
        tasks, live = plan.tasks(loader.options.prefetch, limit)
        fields = max(loader.options.prefetch, live)
        loader._ensure_buffers(fields)
        self.ring = loader._ring
        used = plan.patches[: limit * plan.batch_size, 0]
        batch_of = np.arange(len(used)) // plan.batch_size
        #: per batch, the rows of its patches grouped by field: {field: rows}
        groups: list[dict[int, np.ndarray]] = [{} for _ in range(limit)]
        if len(used):
            order = np.lexsort((np.arange(len(used)), used, batch_of))
            keys = np.column_stack([batch_of[order], used[order]])
            cuts = np.flatnonzero(np.any(keys[1:] != keys[:-1], axis=1)) + 1
            for chunk in np.split(order, cuts):
                k, f = int(batch_of[chunk[0]]), int(used[chunk[0]])
                groups[k][f] = chunk - k * plan.batch_size
        #: the tasks not yet taken, in the order they run one after another:
        #: ("read", field, -1) and ("part", batch, field)
        self.pending: list[tuple[str, int, int]] = []
        for kind, i in tasks:
            if kind == "read":
                self.pending.append(("read", i, -1))
            else:
                self.pending.extend(("part", i, f) for f in groups[i])
        self.groups = groups
        self.reads_left = sum(kind == "read" for kind, _ in tasks)
        #: parts still to be copied into each batch, and to be taken from each field
        self.parts_left = [len(g) for g in groups]
        self.uses: dict[int, int] = {}
        for g in groups:
            for f in g:
                self.uses[f] = self.uses.get(f, 0) + 1
        self.free = list(loader._pool[:fields])
        self.buffers: dict[int, _Buffers] = {}
        self.assembled: dict[int, int] = {}
        self.released = -1
        self.error: BaseException | None = None
        self.closed = False
        self.cond = threading.Condition()
        self.start = time.perf_counter()
        self.workers = [
            threading.Thread(target=self._work, name=f"maelstrom-loader-{i}", daemon=True)
            for i in range(loader.options.threads)
        ]
        for worker in self.workers:
            worker.start()

    def _ready(self) -> int | None:
        """Index in ``pending`` of the earliest task ready to run, if any."""
        window = self.released + len(self.ring)
        read_seen = False
        for i, (kind, a, b) in enumerate(self.pending):
            if kind == "read":
                if not read_seen:
                    read_seen = True
                    if self.free:
                        return i
            elif a <= window:
                if b in self.buffers:
                    return i
            elif read_seen or not self.reads_left:
                return None  # later parts wait for the consumer, later reads for this one
        return None

    def _work(self) -> None:
        try:
            while True:
                with self.cond:
                    task = buf = None
                    while task is None:
                        if self.closed or self.error is not None or not self.pending:
                            return
                        i = self._ready()
                        if i is None:
                            self.cond.wait()
                            continue
                        task = self.pending.pop(i)
                        if task[0] == "read":
                            buf = self.free.pop()
                            self.reads_left -= 1
                        else:
                            buf = self.buffers[task[2]]
                kind, a, b = task
                if kind == "read":
                    self._read(a, buf)
                else:
                    self._part(a, b, buf)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            with self.cond:
                self.error = self.error or exc
                self.cond.notify_all()

    def _read(self, pos: int, buf: _Buffers) -> None:
        nbytes = self.loader._read(self.plan.fields[pos], buf)
        self.loader._count(bytes_read=nbytes, fields=1)
        with self.cond:
            self.buffers[pos] = buf
            self.cond.notify_all()

    def _part(self, k: int, pos: int, buf: _Buffers) -> None:
        rows = self.groups[k][pos]
        self.loader._assemble(self.plan, k, rows, self.ring[k % len(self.ring)], buf)
        with self.cond:
            self.parts_left[k] -= 1
            if not self.parts_left[k]:
                self.assembled[k] = sum(len(r) for r in self.groups[k].values())
            self.uses[pos] -= 1
            if not self.uses[pos]:
                self.free.append(self.buffers.pop(pos))
            self.cond.notify_all()

    def __iter__(self) -> Iterator[Batch]:
        for k in range(self.limit):
            with self.cond:
                self.released = k - 1
                self.cond.notify_all()
                while k not in self.assembled:
                    if self.error is not None:
                        raise self.error
                    self.cond.wait()
                n = self.assembled.pop(k)
            out = self.ring[k % len(self.ring)]
            if n < len(out.inputs):
                out = Batch(out.inputs[:n], out.target[:n])
            if k == 0:
                self.loader.first_batch_s = time.perf_counter() - self.start
            self.loader._count(bytes_delivered=out.inputs.nbytes + out.target.nbytes, batches=1)
            yield out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        for worker in self.workers:
            worker.join()
