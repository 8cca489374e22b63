"""Gridded loader: read -> decode -> select -> normalise -> feature -> patch -> batch.

The layout of the files is configuration (``loader.layout``, :class:`Layout`); the default is the
climetlab-maelstrom-yr layout of AP1 (see :mod:`maelstrom_run.data.samples`):
``predictors(leadtime, y, x, predictor)``, ``target_mean(leadtime, y, x)``,
``static_predictors(y, x, static_predictor)``. Other layouts name a list of 3-D variables
``(sample, y, x)`` stacked as channels (ERA5: ``t2m``, ``msl``, ... on ``(time, latitude,
longitude)``), the target variable, static fields and the names of the sample, y and x
dimensions. The unit of work is a *field*: one step along the sample dimension of one file,
``(y, x, predictor)``.

- **read**: uncompressed contiguous variables (the layout of the AP1 files) are read with
  plain sequential ``os.preadv`` calls at the offset h5py reports, straight into a reused buffer:
  no HDF5 lock, the GIL released, one request per variable of a field (as h5py's ``read_direct``
  does), the kernel's normal read-ahead doing the rest on cold files (explicit ``WILLNEED`` hints
  measured slower). Chunked deflate-compressed variables are read chunk by chunk raw
  (``read_direct_chunk``, under h5py's lock) and decompressed outside it with zlib, which releases
  the GIL, so threads decompress in parallel. Other filters fall back to h5py's ``read_direct``.
- **decode**: as ``xarray.open_dataset`` does by default: ``_Unsigned``, ``_FillValue`` and
  ``missing_value`` as NaN, then ``scale_factor`` and ``add_offset``, into float32, in the
  worker threads (no xarray on the way).
- **select**: the predictors named in ``loader.predictors`` (all when unset).
- **normalise**: per predictor, with means and standard deviations computed at run time from a
  subsample of the files (``loader.normalise``); nothing is baked into the files. Each patch is
  normalised in the output batch right after its copy, while it is in the CPU cache.
- **feature**: the static predictors, the coordinates (latitude, longitude) and the leadtime as
  extra input channels (``loader.features``); the target is the target variable minus the raw
  forecast (``layout.base``, AP1's ``air_temperature_2m``; ``loader.target: difference``) or the
  target variable itself (``mean``).
- **patch**: square patches of ``loader.patch_size`` tiling each field (a random tiling origin
  and order when shuffling); no patch size means the whole field.
- **batch**: ``batch_size`` patches into one of a ring of preallocated output buffers.

``loader.threads`` worker threads run the reads and the batch assembly; at most
``loader.prefetch`` fields are in memory at once (more only when one batch needs more fields).
A batch handed out stays valid until the next one is requested: its buffer is then reused.
Throughput is counted as bytes read from storage and bytes delivered (GB = 1e9 bytes).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..config.schema import LoaderLayout
from ..core.errors import ConfigError, DataError

GB = 1e9
#: The raw forecast that ``target: difference`` subtracts from the analysis (AP1).
BASE = str(LoaderLayout.base)
FEATURES = ("static_predictors", "coordinates", "leadtime")
TARGETS = ("difference", "mean")
#: Hours per unit of a lead time variable (its ``units``); AP1's files hold seconds.
_LEAD_UNITS = {"s": 1 / 3600, "sec": 1 / 3600, "second": 1 / 3600, "seconds": 1 / 3600, "min": 1 / 60,
               "minute": 1 / 60, "minutes": 1 / 60, "h": 1.0, "hour": 1.0, "hours": 1.0, "day": 24.0,
               "days": 24.0}  # fmt: skip
#: Held around every h5py call of the loader: HDF5 is not thread-safe and h5py's own lock does not
#: cover objects freed in one thread while another reads (seen as corrupt reads and crashes).
_H5_LOCK = threading.RLock()
#: HDF5 filter ids the raw-chunk reader undoes itself.
_DEFLATE, _SHUFFLE = 1, 2
#: Native byte order little-endian: byte planes of a shuffled chunk become 16-bit values by shifts.
_LITTLE = sys.byteorder == "little"


#: Rows of a patch go over in blocks of about this size (copy, then work on the copy in the cache).
_BLOCK_BYTES = 1 << 20


class LoaderError(DataError):
    """An input file that cannot be loaded; the message names the file and the key (a
    :class:`DataError`, so the commands report it as the user error it is)."""


@dataclass(frozen=True)
class Layout:
    """Where the loader finds things in the files (``loader.layout``); the defaults are AP1's.

    ``predictors``: one 4-D variable ``(sample, y, x, predictor)`` whose channel names are in the
    variable ``predictor_names`` (numbered when null), or a list of 3-D variables ``(sample, y, x)``
    stacked as channels in that order. ``static``: likewise a 3-D ``(y, x, static)`` variable named
    by ``static_names``, or a list of 2-D ``(y, x)`` variables, or null. ``base``: the predictor
    ``target: difference`` subtracts. ``leadtime``: the variable along the sample dimension that
    the ``leadtime`` feature reads (its units say seconds, minutes, hours or days).
    """

    # the defaults are those of the config schema's LoaderLayout (AP1's): one place for them
    sample_dim: str = LoaderLayout.sample_dim
    y_dim: str = LoaderLayout.y_dim
    x_dim: str = LoaderLayout.x_dim
    predictors: str | tuple[str, ...] = LoaderLayout.predictors  # type: ignore[assignment]
    predictor_names: str | None = LoaderLayout.predictor_names
    target: str = LoaderLayout.target
    base: str | None = LoaderLayout.base
    static: str | tuple[str, ...] | None = LoaderLayout.static  # type: ignore[assignment]
    static_names: str | None = LoaderLayout.static_names
    leadtime: str | None = LoaderLayout.leadtime
    latitude: str = LoaderLayout.latitude
    longitude: str = LoaderLayout.longitude

    @classmethod
    def from_config(cls, layout: Mapping[str, Any] | None) -> Layout:
        if not layout:
            return cls()
        known = set(cls.__dataclass_fields__)
        if unknown := [k for k in layout if k not in known]:
            raise ConfigError(f"loader.layout.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        # lists (also OmegaConf's) as tuples: a Layout is hashable and compared by value
        values = {
            k: (tuple(v) if isinstance(v, Sequence) and not isinstance(v, str) else v)
            for k, v in layout.items()
        }
        for key in ("predictors", "static"):
            if isinstance(values.get(key), tuple) and not values[key]:
                raise ConfigError(f"loader.layout.{key}: an empty list; name the variables")
        return cls(**{**{k: getattr(cls(), k) for k in known}, **values})

    @property
    def stacked(self) -> bool:
        """Predictors are separate 3-D variables (not one 4-D variable)."""
        return isinstance(self.predictors, tuple)


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
    layout: Layout = field(default_factory=Layout)

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
        if self.target == "difference" and self.layout.base is None:
            raise bad(
                "target", "difference needs loader.layout.base (the predictor to subtract); or set mean"
            )
        if "leadtime" in self.features and self.layout.leadtime is None:
            raise bad("features", "leadtime needs loader.layout.leadtime (the lead time variable)")
        if "static_predictors" in self.features and self.layout.static is None:
            raise bad("features", "static_predictors needs loader.layout.static (the static fields)")

    @classmethod
    def from_config(cls, loader: Any, batch_size: int, seed: int = 0, **overrides: Any) -> GriddedOptions:
        get = loader.get if hasattr(loader, "get") else lambda key, default=None: default
        predictors = get("predictors", None)
        layout = get("layout", None)
        if layout is not None and not isinstance(layout, Mapping):
            raise ConfigError(f"loader.layout: expected a mapping, got {layout!r}")
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
            "layout": Layout.from_config(dict(layout) if layout is not None else None),
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


def _dims(path: Path, f: Any, name: str, key: str) -> tuple[str, ...]:
    if name not in f:
        found = ", ".join(k for k in f if not k.startswith("_"))
        raise LoaderError(f"{path}: variable {name!r} not found (loader.layout.{key}); the file has {found}")
    import h5py

    ds = f[name]
    if not isinstance(ds, h5py.Dataset):
        raise LoaderError(f"{path}: {name!r} is a group, not a variable (loader.layout.{key})")
    if ds.ndim == 1 and h5py.h5ds.is_scale(ds.id):  # a coordinate variable: its own dimension
        return (name,)
    try:
        return tuple(ds.dims[i][0].name.rsplit("/", 1)[-1] for i in range(ds.ndim))
    except (IndexError, RuntimeError, KeyError):  # a variable without dimension scales
        raise LoaderError(f"{path}: variable {name!r} has no named dimensions (not NetCDF4?)") from None


def _open(path: Path) -> Any:
    import h5py

    from .flavour import netcdf_flavour

    if not path.exists():
        raise LoaderError(f"{path}: no such file; check dataset.path, or fetch the dataset again")
    flavour = netcdf_flavour(path)
    if flavour is None:
        raise LoaderError(
            f"{path}: not a NetCDF file (neither HDF5 nor CDF at its start); check dataset.path"
        )
    if flavour != "hdf5":
        raise LoaderError(
            f"{path}: a NetCDF3 ({flavour.upper()}) file; the gridded loader reads NetCDF4: convert it "
            "with `nccopy -k nc4 IN OUT`"
        )
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        reason = str(exc).split("(", 1)[-1].rstrip(")") or str(exc)
        raise LoaderError(
            f"{path}: not a readable NetCDF4/HDF5 file ({reason}); it may be truncated, fetch it again"
        ) from None


@dataclass(frozen=True)
class Decoding:
    """How stored values become values, as xarray decodes them by default (``valid_*`` ignored as there)."""

    unsigned: np.dtype | None = None
    fills: tuple[float, ...] = ()
    scale: float = 1.0
    offset: float = 0.0
    #: float64 scale or offset (as ERA5's): computed in float64, as xarray does, then rounded to
    #: float32; float32 arithmetic would lose digits where the offset cancels the scaled value
    wide: bool = False
    #: The stored dtype, for the lookup table of 8- and 16-bit integers.
    dtype: np.dtype | None = None

    @classmethod
    def of(cls, ds: Any) -> Decoding | None:
        """Of an h5py dataset."""
        return cls.from_attrs(ds.attrs, ds.dtype)

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], dtype: np.dtype) -> Decoding | None:
        """Of a variable's attributes and stored dtype; None when the stored values are the values."""
        dtype = np.dtype(dtype)
        unsigned = None
        if dtype.kind == "i" and str(_attr(attrs, "_Unsigned", "false")).lower() == "true":
            unsigned = np.dtype(f"{dtype.byteorder}u{dtype.itemsize}")
        stored = unsigned or dtype
        fills = []
        for key in ("_FillValue", "missing_value"):
            for value in np.atleast_1d(_attr(attrs, key, [])):
                fill = np.asarray(value).astype(dtype).view(stored) if unsigned else np.asarray(value, stored)
                if not (stored.kind == "f" and np.isnan(fill)):
                    fills.append(fill.item())
        scale = float(_attr(attrs, "scale_factor", 1.0))
        offset = float(_attr(attrs, "add_offset", 0.0))
        wide = any(
            np.asarray(attrs[k]).dtype == np.float64 for k in ("scale_factor", "add_offset") if k in attrs
        )
        if unsigned is None and not fills and scale == 1.0 and offset == 0.0 and dtype == np.dtype("<f4"):
            return None  # the stored floats are the values
        return cls(unsigned, tuple(dict.fromkeys(fills)), scale, offset, wide or dtype.itemsize > 4, dtype)

    @property
    def has_table(self) -> bool:
        """Decoded through a lookup table (8- and 16-bit integers)."""
        return self.dtype is not None and self.dtype.kind in "iu" and self.dtype.itemsize <= 2

    @functools.cached_property
    def table(self) -> np.ndarray | None:
        """For 8- and 16-bit integers (packed data): the decoded value of every stored bit pattern,
        computed once as :meth:`apply` computes it; decoding is then one lookup per value."""
        if not self.has_table:
            return None
        bits = np.dtype(f"u{self.dtype.itemsize}")
        patterns = np.arange(2 ** (8 * self.dtype.itemsize), dtype=bits).view(self.dtype)
        out = np.empty(len(patterns), np.float32)
        self._compute(patterns, out)
        return out

    def apply(self, raw: np.ndarray, out: np.ndarray) -> None:
        """``out`` (float32, any strides) = the decoded ``raw``, in blocks of rows that stay in the
        core's cache: scaled, offset and masked in a contiguous block, then one copy into ``out``."""
        table = self.table
        if table is not None and raw.ndim:
            bits = raw.view(f"u{raw.dtype.itemsize}")
            if out.flags.c_contiguous and out.dtype == np.float32 and out.shape == raw.shape:
                _lookup(table, bits.reshape(-1), out.reshape(-1))
                return
            rows = max(1, (1 << 15) // max(1, raw[0].size))
            for i in range(0, len(raw), rows):
                out[i : i + rows] = np.take(table, bits[i : i + rows])
            return
        self._compute(raw, out)

    def _compute(self, raw: np.ndarray, out: np.ndarray) -> None:
        src = raw.view(self.unsigned) if self.unsigned is not None else raw
        if src.ndim == 0:
            src, out = src.reshape(1), out.reshape(1)
        dtype = np.float64 if self.wide else np.float32
        rows = max(1, (1 << 15) // max(1, src[0].size))
        for i in range(0, len(src), rows):
            part = src[i : i + rows]
            block = np.empty(part.shape, dtype)
            self._scale(part, block, dtype)
            for fill in self.fills:
                np.copyto(block, dtype(np.nan), where=part == fill)
            out[i : i + rows] = block

    def _scale(self, src: np.ndarray, out: np.ndarray, dtype: type) -> None:
        if self.scale != 1.0:
            np.multiply(src, dtype(self.scale), out=out, casting="unsafe")
        else:
            np.copyto(out, src, casting="unsafe")
        if self.offset:
            np.add(out, dtype(self.offset), out=out)


#: Values looked up at a time, their indices in a per-thread buffer that stays in the cache (np.take
#: would otherwise convert all indices into a fresh array first).
_LOOKUP_BLOCK = 1 << 15
_lookup_scratch = threading.local()


def _lookup(table: np.ndarray, bits: np.ndarray, out: np.ndarray) -> None:
    """``out = table[bits]``, 1-D and contiguous, in blocks."""
    index = getattr(_lookup_scratch, "index", None)
    if index is None:
        index = _lookup_scratch.index = np.empty(_LOOKUP_BLOCK, np.intp)
    for i in range(0, len(bits), _LOOKUP_BLOCK):
        n = min(_LOOKUP_BLOCK, len(bits) - i)
        np.copyto(index[:n], bits[i : i + n], casting="unsafe")
        # every bit pattern is in the table: "clip" never clips, and writes out unbuffered
        np.take(table, index[:n], out=out[i : i + n], mode="clip")


def _attr(attrs: Any, key: str, default: Any) -> Any:
    value = attrs.get(key, default)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1 and key != "missing_value":
        return value.reshape(()).item()
    return value


def decoded(ds: Any, index: Any = ()) -> np.ndarray:
    """``ds[index]`` of an h5py dataset, CF-decoded into float32."""
    raw = ds[index] if index != () else ds[()]
    decoding = Decoding.of(ds)
    if decoding is None:
        return np.asarray(raw, np.float32)
    out = np.empty(np.shape(raw), np.float32)
    decoding.apply(np.asarray(raw), out)
    return out


@dataclass
class _Variable:
    """Where one variable's slabs (one step along the sample dimension) are, and how to decode them."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    #: Byte offset of the data when they can be read raw (contiguous, unfiltered).
    offset: int | None
    #: Bytes in storage per slab.
    slab_bytes: int
    decoding: Decoding | None = None
    #: Chunk shape and HDF5 filter ids when the chunks can be read raw and decompressed here.
    chunks: tuple[int, ...] | None = None
    filters: tuple[int, ...] = ()
    #: False for a field without the sample dimension (static): one slab, whatever the step.
    along: bool = True

    @property
    def direct(self) -> bool:
        """Slabs can be read straight into a float32 buffer."""
        return self.offset is not None and self.decoding is None and self.dtype == np.dtype("<f4")


def _filters(ds: Any) -> tuple[int, ...] | None:
    """The filter pipeline of a chunked variable when only deflate and shuffle: undone here."""
    plist = ds.id.get_create_plist()
    ids = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
    return ids if set(ids) <= {_DEFLATE, _SHUFFLE} else None


def _variable(path: Path, f: Any, name: str, file_size: int, ndim: int, along: bool = True) -> _Variable:
    """``along``: the variable has the sample dimension first (a slab per step); else one slab."""
    ds = f[name]
    if ds.dtype.kind not in "fiu":
        import h5py

        kind = "strings" if h5py.check_string_dtype(ds.dtype) else str(ds.dtype)
        raise LoaderError(
            f"{path}: variable {name!r} holds {kind}, not numbers; loader.layout must name numeric fields"
        )
    if ds.ndim != ndim:
        raise LoaderError(f"{path}: variable {name!r} has {ds.ndim} dimensions, expected {ndim}")
    shape = tuple(ds.shape) if along else (1, *ds.shape)
    slab = int(np.prod(shape[1:])) * ds.dtype.itemsize
    offset = ds.id.get_offset() if ds.chunks is None and ds.compression is None else None
    if offset is not None and offset + slab * shape[0] > file_size:
        raise LoaderError(
            f"{path}: variable {name!r} ends at byte {offset + slab * shape[0]} but the file has "
            f"{file_size} bytes; it is truncated, fetch it again"
        )
    storage = slab if offset is not None else ds.id.get_storage_size() // max(1, shape[0])
    chunks = filters = None
    if ds.chunks is not None and along:
        filters = _filters(ds)
        chunks = tuple(ds.chunks) if filters is not None else None
    decoding = Decoding.of(ds)
    return _Variable(name, shape, ds.dtype, offset, int(storage), decoding, chunks, filters or (), along)


class AP1Files:
    """The layout of a set of gridded files, checked once: names, shapes, offsets, static fields.

    (Named after AP1, the default layout; any :class:`Layout` works.)
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], layout: Layout | None = None) -> None:
        self.layout = layout = layout or Layout()
        self.paths = [Path(p) for p in files]
        if not self.paths:
            raise LoaderError("no files given; check dataset.path")
        #: per file: the variables of the predictor channels (one, or one per channel) and the target
        self.variables: list[dict[str, _Variable]] = []
        for path in self.paths:
            with _H5_LOCK, _open(path) as f:
                self.variables.append(self._check(path, f))
                shape = self._shape(f)
                if len(self.variables) == 1:
                    self.shape = shape  # (sample, y, x, predictor)
                    self._first(path, f)
                elif shape != self.shape:
                    raise LoaderError(
                        f"{path}: predictors have the shape {shape}, but {self.paths[0].name} has "
                        f"{self.shape}; the files of one loader must share the grid"
                    )

    def _check(self, path: Path, f: Any) -> dict[str, _Variable]:
        lay = self.layout
        field_dims = (lay.sample_dim, lay.y_dim, lay.x_dim)
        names = list(lay.predictors) if lay.stacked else [str(lay.predictors)]
        size = path.stat().st_size
        out: dict[str, _Variable] = {}
        for name in [*names, lay.target]:
            key = "target" if name == lay.target and name not in names else "predictors"
            dims = _dims(path, f, name, key)
            four = not lay.stacked and key == "predictors"
            if four and len(dims) == 4 and dims[1:] == (lay.predictor_names or dims[1], *field_dims[1:]):
                raise LoaderError(
                    f"{path}: variable {name!r} is channels-first ({', '.join(dims)}); the loader needs "
                    f"the channel dimension last: ({', '.join(field_dims)}, {dims[1]}); transpose the files "
                    "(e.g. `ncpdq -a`) or list the channels as 3-D variables in loader.layout.predictors"
                )
            if dims[:3] != field_dims or len(dims) != (4 if four else 3):
                want = (*field_dims, "predictor") if four else field_dims
                raise LoaderError(
                    f"{path}: variable {name!r} has dimensions ({', '.join(dims)}), expected "
                    f"({', '.join(want)}); set loader.layout (sample_dim, y_dim, x_dim, {key})"
                )
            out[name] = _variable(path, f, name, size, 4 if four else 3)
        for name, dims in self._static_dims(path, f).items():
            out[name] = _variable(path, f, name, size, len(dims), along=False)
        if lay.leadtime is not None:
            dims = _dims(path, f, lay.leadtime, "leadtime")
            if dims != (lay.sample_dim,):
                raise LoaderError(
                    f"{path}: variable {lay.leadtime!r} has dimensions ({', '.join(dims)}), expected "
                    f"({lay.sample_dim}); set loader.layout.leadtime (null: no lead time variable)"
                )
        return out

    def _shape(self, f: Any) -> tuple[int, int, int, int]:
        lay = self.layout
        if lay.stacked:
            leads, ny, nx = f[lay.predictors[0]].shape
            for name in lay.predictors[1:]:
                if f[name].shape != (leads, ny, nx):
                    raise LoaderError(
                        f"{f.filename}: {name!r} has the shape {f[name].shape}, but {lay.predictors[0]!r} "
                        f"has {(leads, ny, nx)}; loader.layout.predictors must share the grid"
                    )
            return (leads, ny, nx, len(lay.predictors))
        leads, ny, nx, p = f[lay.predictors].shape
        return (leads, ny, nx, p)

    def _first(self, path: Path, f: Any) -> None:
        lay = self.layout
        _, ny, nx, p = self.shape
        if lay.stacked:
            self.predictor_names = list(lay.predictors)
        elif lay.predictor_names is not None and lay.predictor_names in f:
            self.predictor_names = [str(n) for n in f[lay.predictor_names].asstr()[:]]
        else:
            self.predictor_names = [f"predictor_{i}" for i in range(p)]
        self.leadtimes = np.zeros(self.shape[0])
        if lay.leadtime is not None:
            ds = f[lay.leadtime]
            units = str(_attr(ds.attrs, "units", "hours")).strip().lower()
            if units not in _LEAD_UNITS:
                raise LoaderError(
                    f"{path}: {lay.leadtime!r} has units {units!r}, not a duration (seconds, hours, days); "
                    "set loader.layout.leadtime to the lead time variable, or null"
                )
            self.leadtimes = decoded(ds).astype(np.float64) * _LEAD_UNITS[units]  # hours
        self.static_names = []
        if isinstance(lay.static, tuple):
            self.static_names = list(lay.static)
        elif lay.static is not None and lay.static_names is not None and lay.static_names in f:
            self.static_names = [str(n) for n in f[lay.static_names].asstr()[:]]

    # the static fields and the coordinates are read when first asked for (the statistics, the
    # features): a loader given its statistics and no such features never reads them

    @functools.cached_property
    def static(self) -> np.ndarray:
        """The first file's static fields ``(y, x, static)`` (their statistics); each file's own are
        read with its fields."""
        _, ny, nx, _ = self.shape
        if self.layout.static is None:
            return np.empty((ny, nx, 0), np.float32)
        path = self.paths[0]
        with _H5_LOCK, _open(path) as f:
            parts = [decoded(f[name]) for name in self._static_dims(path, f)]
        parts = [values[..., None] if values.ndim == 2 else values for values in parts]
        return np.ascontiguousarray(np.concatenate(parts, axis=-1), np.float32)

    @functools.cached_property
    def latlon(self) -> np.ndarray | None:
        """The first file's latitude and longitude ``(y, x, 2)``, or None when it has none on the grid."""
        lay = self.layout
        _, ny, nx, _ = self.shape
        with _H5_LOCK, _open(self.paths[0]) as f:
            if lay.latitude not in f or lay.longitude not in f:
                return None
            lat, lon = decoded(f[lay.latitude]), decoded(f[lay.longitude])
        if lat.ndim == 1 and lon.ndim == 1:  # a regular grid: broadcast
            lon, lat = np.meshgrid(lon, lat)
        if lat.shape == (ny, nx) and lon.shape == (ny, nx):
            return np.stack([lat, lon], axis=-1).astype(np.float32)
        return None

    def _static_dims(self, path: Path, f: Any) -> dict[str, tuple[str, ...]]:
        """The static variables and their dimensions, checked: (y, x, static) or a list of (y, x)."""
        lay = self.layout
        if lay.static is None:
            return {}
        stacked = isinstance(lay.static, tuple)
        out = {}
        for name in lay.static if stacked else [lay.static]:
            dims = _dims(path, f, name, "static")
            want = (lay.y_dim, lay.x_dim) if stacked else (lay.y_dim, lay.x_dim, dims[-1])
            if dims != want:
                raise LoaderError(
                    f"{path}: variable {name!r} has dimensions ({', '.join(dims)}), expected "
                    f"({', '.join(want)}); set loader.layout.static"
                )
            out[name] = dims
        return out

    @property
    def static_channels(self) -> int:
        """Channels of the static fields (from their shapes, nothing read)."""
        lay, first = self.layout, self.variables[0]
        if lay.static is None:
            return 0
        names = lay.static if isinstance(lay.static, tuple) else (lay.static,)
        return sum(first[n].shape[-1] if len(first[n].shape) == 4 else 1 for n in names)

    @property
    def field_bytes(self) -> int:
        """Bytes of one field (predictors and target of one step) in memory."""
        _, ny, nx, p = self.shape
        return ny * nx * (p + 1) * 4

    def statistics(self, max_files: int = 8) -> Stats:
        """Means and standard deviations from a subsample of the files (about 128 points a side),
        of the decoded values, fill values left out."""
        import h5py

        lay = self.layout
        values, nbytes = [], 0
        for path in self.paths[:: max(1, -(-len(self.paths) // max_files))]:
            with _H5_LOCK, h5py.File(path, "r") as f:
                first = f[lay.predictors[0] if lay.stacked else lay.predictors]
                step = max(1, max(first.shape[1:3]) // 128)
                index = np.s_[:, ::step, ::step]
                if lay.stacked:
                    part = np.stack([decoded(f[n], index) for n in lay.predictors], axis=-1)
                else:
                    part = decoded(first, index)
                values.append(part.reshape(-1, part.shape[-1]))
                nbytes += values[-1].size * first.dtype.itemsize
        predictors = np.concatenate(values)
        # no static fields: (0, 0), as reshape cannot infer a length from an empty array
        static = self.static.reshape(-1, self.static.shape[-1]) if self.static.size else np.zeros((0, 0))

        def moments(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            a = a.astype(np.float64)
            if not a.size:
                return np.zeros(a.shape[-1], np.float32), np.ones(a.shape[-1], np.float32)
            mean, std = np.nanmean(a, axis=0), np.nanstd(a, axis=0)
            mean, std = np.nan_to_num(mean), np.nan_to_num(std, nan=1.0)  # channels of fill values only
            return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)

        return Stats(moments(predictors), moments(static), nbytes + self.static.nbytes)


class _Reader:
    """Reads fields of one file into given buffers; one per file, shared by the worker threads."""

    def __init__(self, path: Path, variables: dict[str, _Variable]) -> None:
        self.path = path
        self.variables = variables
        self.fd: int | None = None
        self.h5: Any = None
        self.datasets: dict[str, Any] = {}
        self.lock = threading.Lock()
        self._scratch = threading.local()

    def _dataset(self, name: str) -> Any:
        """The h5py dataset ``name``, opened once (call with :data:`_H5_LOCK` held)."""
        if self.h5 is None:
            self.h5, self.datasets = _open(self.path), {}
        if name not in self.datasets:
            self.datasets[name] = self.h5[name]
        return self.datasets[name]

    def raw_buffer(self, var: _Variable) -> np.ndarray:
        """A per-thread buffer for one stored slab of ``var``."""
        shape, key = var.shape[1:], (var.shape[1:], var.dtype.str)
        cache = getattr(self._scratch, "buffers", None)
        if cache is None:
            cache = self._scratch.buffers = {}
        if key not in cache:
            cache[key] = np.empty(shape, var.dtype)
        return cache[key]

    def read(self, name: str, lead: int, out: np.ndarray) -> int:
        """Slab ``lead`` of variable ``name``, decoded, into ``out`` (float32, any strides)."""
        var = self.variables[name]
        if var.direct and out.flags.c_contiguous:
            return self._pread(var, lead, out)
        raw = self.raw_buffer(var)
        nbytes = self.read_stored(name, lead, raw)
        if var.decoding is None:
            np.copyto(out, raw, casting="unsafe")
        else:
            var.decoding.apply(raw, out)
        return nbytes

    def read_as_floats(self, name: str, lead: int, plane: np.ndarray) -> int:
        """Slab ``lead`` of packed variable ``name``: its stored integers as float32 (exact) into
        ``plane``, NaN at the fill values, scale and offset not applied; returns the bytes read."""
        var = self.variables[name]
        dec, stored = var.decoding, self.raw_buffer(var)
        nbytes = self.read_stored(name, lead, stored)
        stored = stored if dec.unsigned is None else stored.view(dec.unsigned)
        np.copyto(plane, stored, casting="unsafe")
        if dec.fills:  # min and max are cheap: a fill outside them is in no point
            low, high = stored.min(), stored.max()
            for fill in dec.fills:
                if low <= fill <= high:
                    np.copyto(plane, np.float32(np.nan), where=stored == fill)
        return nbytes

    def read_stored(self, name: str, lead: int, raw: np.ndarray) -> int:
        """Slab ``lead`` of variable ``name`` as stored (not decoded) into ``raw`` (C-contiguous,
        the stored dtype); returns the bytes read from storage."""
        var = self.variables[name]
        if var.offset is not None:
            return self._pread(var, lead, raw)
        if var.chunks is not None:
            return self._read_chunks(var, lead, raw)
        with _H5_LOCK:
            self._dataset(name).read_direct(raw, np.s_[lead] if var.along else np.s_[...])
        return var.slab_bytes

    def _pread(self, var: _Variable, lead: int, out: np.ndarray) -> int:
        with self.lock:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_RDONLY)
        view = memoryview(out).cast("B")
        start, done = var.offset + (lead if var.along else 0) * var.slab_bytes, 0
        while done < var.slab_bytes:
            n = os.preadv(self.fd, [view[done:]], start + done)
            if n <= 0:
                raise LoaderError(
                    f"{self.path}: {var.name} ends early at byte {start + done}; the file is truncated"
                )
            done += n
        return var.slab_bytes

    def _read_chunks(self, var: _Variable, lead: int, out: np.ndarray) -> int:
        """The chunks covering slab ``lead``, read raw under the lock and decompressed outside it."""
        chunks, shape = var.chunks, var.shape
        chunk_bytes = int(np.prod(chunks)) * var.dtype.itemsize
        c0 = lead - lead % chunks[0]
        ranges = [range(0, n, c) for n, c in zip(shape[1:], chunks[1:], strict=True)]
        nbytes = 0
        for corner in np.ndindex(*(len(r) for r in ranges)):
            start = tuple(r[i] for r, i in zip(ranges, corner, strict=True))
            with _H5_LOCK:  # the raw read is short; decompressing below runs in parallel
                ds = self._dataset(var.name)
                try:
                    mask, data = ds.id.read_direct_chunk((c0, *start))
                except (OSError, KeyError, RuntimeError):  # a chunk never written: the fill value
                    mask, data = None, ds.fillvalue
            window = tuple(
                slice(s, min(s + c, n)) for s, c, n in zip(start, chunks[1:], shape[1:], strict=True)
            )
            if mask is None:
                out[window] = data
                continue
            nbytes += len(data)
            shuffled = False
            for i, fid in reversed(list(enumerate(var.filters))):
                if mask & (1 << i):
                    continue  # HDF5 skipped this filter for this chunk
                if fid == _DEFLATE:
                    # the GIL released while inflating: threads inflate in parallel; the output
                    # sized once (grown from 16 kB it is copied again and again, with the GIL held)
                    data = zlib.decompress(data, bufsize=chunk_bytes)
                else:
                    shuffled = True  # shuffle comes first in the pipeline: undone last, below
            size = var.dtype.itemsize
            whole = chunks[0] == 1 and tuple(chunks[1:]) == shape[1:]
            if whole:  # the chunk is the slab: straight into out
                target = out.reshape(-1).view(np.uint8).reshape(-1, size)
            else:
                target = np.empty((int(np.prod(chunks)), size), np.uint8)
            planes = np.frombuffer(data, np.uint8)
            if shuffled and size == 2 and _LITTLE:  # 16 bits: two whole-array operations
                planes, value = planes.reshape(2, -1), target.view(np.uint16).reshape(-1)
                np.left_shift(planes[1], 8, out=value, dtype=np.uint16)
                np.bitwise_or(value, planes[0], out=value)
            elif shuffled and size > 1:  # bytes grouped by significance back to values
                planes = planes.reshape(size, -1)
                for b in range(size):
                    target[:, b] = planes[b]
            else:
                target.reshape(-1)[:] = planes
            if not whole:
                block = target.view(var.dtype).reshape(chunks)[lead - c0]
                out[window] = block[tuple(slice(0, w.stop - w.start) for w in window)]
        return nbytes

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.h5 is not None:
            with _H5_LOCK:
                self.datasets.clear()
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
    """A field's predictors and target; ``planar``: the predictors as planes ``(predictor, y, x)``
    (for separate variables: each read contiguously, interleaved when a patch is assembled)."""

    def __init__(
        self, ny: int, nx: int, p: int, s: int = 0, planar: bool = False, raw_base: bool = False
    ) -> None:
        # first touched by the first read into them, then reused on every pass
        self.planar = planar
        #: the raw forecast, when its plane holds normalised values (``GriddedLoader._read_fused``)
        self.raw_base = np.empty((ny, nx) if raw_base else (0, 0), np.float32)
        self.predictors = np.empty((p, ny, nx) if planar else (ny, nx, p), np.float32)
        self.target = np.empty((ny, nx), np.float32)
        self.static = np.empty((ny, nx, s), np.float32)
        #: packed predictors: their planes hold the stored integers as floats, and a patch is
        #: decoded and normalised in one multiply-add over (x, selected) rows: ``x * a + b``
        self.a = self.b = np.empty(0, np.float32)
        #: the target's scale and offset when its plane holds stored integers too
        self.target_scale: tuple[np.float32, np.float32] | None = None


class GriddedLoader:
    """Batches of patches of gridded files (AP1's layout unless ``options.layout`` says otherwise); iterate it for one pass (``iter_batches`` for more).

    ``stats`` normalises with given statistics (those of the training files for a validation
    loader); by default they are computed from the files when ``normalise`` is on.
    """

    def __init__(
        self, files: Sequence[str | os.PathLike[str]], options: GriddedOptions, stats: Stats | None = None
    ) -> None:
        self.options = options
        self.layout = AP1Files(files, options.layout)
        base_name = options.layout.base
        leads, ny, nx, _ = self.layout.shape
        names = self.layout.predictor_names
        first = self.layout.paths[0]
        wanted = list(options.predictors) if options.predictors is not None else names
        if missing := [n for n in wanted if n not in names]:
            raise LoaderError(
                f"{first}: loader.predictors: {', '.join(map(repr, missing))} not in the file's predictor "
                f"variable ({', '.join(names)})"
            )
        if options.target == "difference" and base_name not in names:
            raise LoaderError(
                f"{first}: loader.target difference needs the predictor {base_name!r} "
                f"(loader.layout.base), not among {', '.join(names)}"
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
        self.base = names.index(base_name) if base_name in names else None
        m = options.multiple
        if options.patch_size is None:
            self.patch = (ny - ny % m, nx - nx % m)
        elif options.patch_size > min(ny, nx):
            raise ConfigError(
                f"loader.patch_size: {options.patch_size} does not fit the {ny}x{nx} grid of {first}; "
                f"set it to at most {min(ny, nx) - min(ny, nx) % m}, or null for whole fields"
            )
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
        self._n_static = self.layout.static_channels if "static_predictors" in options.features else 0
        self.channels = (
            len(self.selected) + self._n_static + self._extra.shape[-1] + ("leadtime" in options.features)
        )
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
            mean, std = (a.astype(np.float64) for a in self.stats.static_predictors)
            self._static_scale, self._static_shift = (
                (1 / std).astype(np.float32),
                (-mean / std).astype(np.float32),
            )
        #: packed predictors decoded while a patch is assembled (:meth:`_read_fused`): every
        #: predictor a separate 8- or 16-bit packed variable in every file, and normalisation on
        self._fused = (
            self.stats is not None
            and options.layout.stacked
            and all(
                v[n].decoding is not None and v[n].decoding.has_table
                for v in self.layout.variables
                for n in options.layout.predictors
            )
        )
        #: predictor channel -> its position among the selected ones
        self._channel_of = {int(i): j for j, i in enumerate(self.selected)}
        self._pool: list[_Buffers] = []
        self._ring: list[Batch] = []
        self._readers = [_Reader(p, v) for p, v in zip(self.layout.paths, self.layout.variables, strict=True)]
        self._lock = threading.Lock()
        self._passes = 0
        self.patches_per_pass = len(self.layout.paths) * leads * self.tiles[0] * self.tiles[1]

    # -- features ------------------------------------------------------------------------------

    def _features(self) -> np.ndarray:
        """Extra channels that are the same in every file: the coordinates (static fields are
        read with each field: AP1's ``bias_recent`` and ``analysis_std`` change from run to run)."""
        _, ny, nx, _ = self.layout.shape
        parts = []
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
            raw_base = self._fused and self.options.target == "difference" and self.base in self._channel_of
            self._pool.append(
                _Buffers(ny, nx, p, self._n_static, planar=self.options.layout.stacked, raw_base=raw_base)
            )
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
        reader, lay = self._readers[index], self.options.layout
        if self._fused:
            return self._read_fused(reader, lead, buf)
        if lay.stacked:  # each 3-D variable into its channel
            # planes (predictor, y, x): each variable read (and decoded) contiguously into its own
            nbytes = sum(reader.read(n, lead, buf.predictors[c]) for c, n in enumerate(lay.predictors))
        else:
            nbytes = reader.read(str(lay.predictors), lead, buf.predictors)
        if self._n_static:  # the file's own static fields, with each of its fields
            if isinstance(lay.static, tuple):
                nbytes += sum(reader.read(n, lead, buf.static[..., c]) for c, n in enumerate(lay.static))
            else:
                nbytes += reader.read(str(lay.static), lead, buf.static)
        if not lay.stacked or lay.target not in lay.predictors:
            return nbytes + reader.read(lay.target, lead, buf.target)
        # the target is one of the predictors: already read
        buf.target[...] = buf.predictors[list(lay.predictors).index(lay.target)]
        return nbytes

    def _read_fused(self, reader: _Reader, lead: int, buf: _Buffers) -> int:
        """read for packed predictors, with normalisation: the selected ones read as stored (half
        the bytes of floats) and held as those integers in float32, decoded and normalised
        together when a patch is assembled; the others decoded; the target finished here, or
        (packed, not a difference) decoded in the patch too."""
        lay = self.options.layout
        names = list(lay.predictors)
        nbytes = 0
        a, b = np.ones(len(self.selected)), np.zeros(len(self.selected))
        for c, name in enumerate(names):
            var = reader.variables[name]
            j = self._channel_of.get(c)
            if j is None:  # not delivered: decoded, for the target's difference
                nbytes += reader.read(name, lead, buf.predictors[c])
                continue
            nbytes += reader.read_as_floats(name, lead, buf.predictors[c])
            dec = var.decoding
            # decoded and normalised in one multiply-add, its factors combined in float64: within
            # a float32 rounding of decoding then normalising (a lookup table cost 1 ns a value)
            scale, shift = float(self._scale[0, j]), float(self._shift[0, j])
            a[j], b[j] = dec.scale * scale, dec.offset * scale + shift
        buf.a = np.tile(a, (self.patch[1], 1)).astype(np.float32)
        buf.b = np.tile(b, (self.patch[1], 1)).astype(np.float32)
        if self._n_static:
            if isinstance(lay.static, tuple):
                nbytes += sum(reader.read(n, lead, buf.static[..., c]) for c, n in enumerate(lay.static))
            else:
                nbytes += reader.read(str(lay.static), lead, buf.static)
        goal = reader.variables[lay.target].decoding
        buf.target_scale = None
        if lay.target in names and names.index(lay.target) not in self._channel_of:
            buf.target[...] = buf.predictors[names.index(lay.target)]
        elif self.options.target != "difference" and goal is not None and goal.has_table:
            # packed too: decoded in the patch, in float32 (within 2 float32 roundings)
            counted = reader.read_as_floats(lay.target, lead, buf.target)
            nbytes += 0 if lay.target in names else counted
            buf.target_scale = (np.float32(goal.scale), np.float32(goal.offset))
        else:  # read raw (again when it is a normalised predictor: counted once)
            counted = reader.read(lay.target, lead, buf.target)
            nbytes += 0 if lay.target in names else counted
        if self.options.target == "difference":
            if self.base in self._channel_of:  # the raw forecast, decoded again for the difference
                reader.read(names[self.base], lead, buf.raw_base)
                raw = buf.raw_base
            else:
                raw = buf.predictors[self.base]
            np.subtract(buf.target, raw, out=buf.target)
        return nbytes

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
        n_sel, n_extra, n_static = len(self.selected), self._extra.shape[-1], self._n_static
        with_lead = "leadtime" in self.options.features
        difference = self.options.target == "difference"
        planar, fused = buf.planar, self._fused
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
                dest = inputs[r:r1, :, :n_sel]
                if planar:  # channels interleaved here, into the block in the cache
                    for j, i in enumerate(self.selected):
                        dest[..., j] = buf.predictors[i][window]
                elif sel is not None:
                    dest[...] = buf.predictors[window][..., sel]
                else:
                    for j, i in enumerate(self.selected):
                        dest[..., j] = buf.predictors[window][..., i]
                if fused:  # decoded and normalised here, in the cache
                    np.multiply(dest, buf.a, out=dest)
                    np.add(dest, buf.b, out=dest)
                    if buf.target_scale is None:
                        target[r:r1] = buf.target[window]
                    else:
                        np.multiply(buf.target[window], buf.target_scale[0], out=target[r:r1])
                        np.add(target[r:r1], buf.target_scale[1], out=target[r:r1])
                    continue
                if difference:  # the raw forecast: from the copy, in the cache, before normalising
                    if base is not None:
                        raw = dest[..., base]
                    else:
                        raw = (
                            buf.predictors[self.base][window]
                            if planar
                            else buf.predictors[window][..., self.base]
                        )
                    np.subtract(buf.target[window], raw, out=target[r:r1])
                else:
                    target[r:r1] = buf.target[window]
                if scale is not None:
                    np.multiply(dest, scale, out=dest)
                    np.add(dest, shift, out=dest)
            if n_static:
                dest = inputs[..., n_sel : n_sel + n_static]
                dest[...] = buf.static[y0 : y0 + py, x0 : x0 + px]
                if scale is not None:
                    np.multiply(dest, self._static_scale, out=dest)
                    np.add(dest, self._static_shift, out=dest)
            if n_extra:
                inputs[..., n_sel + n_static : n_sel + n_static + n_extra] = self._extra[
                    y0 : y0 + py, x0 : x0 + px
                ]
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
