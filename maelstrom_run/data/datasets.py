"""``load_dataset``: a MAELSTROM dataset by name (``conf/dataset/NAME.yaml``) or by its config.

    from maelstrom_run.data import load_dataset
    ds = load_dataset("ap5", tier="tiny")         # generated sample data of the real layout
    ds = load_dataset("ap1", tier="5GB")          # the public files, fetched into the cache
    ds.files                                       # local paths
    ds.to_xarray()                                 # one xarray.Dataset
    ds.to_pytorch(["t2m_in", "z_in"]) / ds.to_tfdataset([...])   # one sample per index
    ds = load_dataset("my_era5.nc")               # own files: a path, a glob or a list of paths

Every view hands out CF-decoded values, as ``xarray.open_dataset(path)`` with its defaults does
(scale/offset, fill values as NaN, valid ranges, ``_Unsigned``, times with their calendar, strings);
``decode=False`` gives the raw stored values.

Where the files come from is the config's ``source`` (``sample``, ``files`` or ``remote``) or the
``source`` argument; a tier that only the remote source knows (``5GB`` of AP1) fetches it.
"""

from __future__ import annotations

import glob
import importlib
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import DataError, closest
from ..core.transfer import Meter
from .cache import Cache, Request
from .flavour import netcdf_flavour
from .sources import join, list_objects, s3_to_https

#: ``module:function(cache_dir, sizes, seed) -> list[Path]`` generating the sample files of a kind.
SAMPLE_GENERATORS = {
    "ap1": "maelstrom_run.data.samples:ensure_ap1",
    "ap2": "maelstrom_run.data.datasets:_ensure_ap2",
    "ap3": "maelstrom_run.data.samples:ensure_ap3",
    "ap5": "maelstrom_run.data.samples:ensure_ap5",
    "ap6": "maelstrom_run.data.samples:ensure_ap6",
}

#: The dimension along which each kind's files hold one sample after another (AP1: a forecast
#: run per file, each lead time a sample).
SAMPLE_DIMENSION = {"ap1": "leadtime", "ap2": "index", "ap3": "column", "ap5": "time", "ap6": "time"}
#: How the files of a kind are joined by :meth:`Dataset.to_xarray`.
CONCAT_DIMENSION = {"ap1": "time", "ap2": "index", "ap3": "column", "ap5": "time", "ap6": "time"}
#: The kind of a dataset named by its files (``load_dataset("dir/*.nc")``): the sample and join
#: dimension is found in the files (:func:`_guess_dimension`).
FILES_KIND = "files"


def _ensure_ap2(cache_dir: Path, sizes: Mapping[str, Any], seed: int = 0) -> list[Path]:
    from .samples import ensure_ap2

    return [ensure_ap2(cache_dir, int(sizes["samples"]), seed)]


def dataset_dirs() -> list[Path]:
    """Where dataset configs are looked up: ``$MAELSTROM_CONFIG_PATH`` first, then the shipped ones."""
    shipped = Path(__file__).resolve().parents[1] / "conf" / "dataset"
    return [d / "dataset" for d in paths.user_config_dirs()] + [shipped]


def available() -> list[str]:
    names = {p.stem for d in dataset_dirs() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def dataset_config(name: str) -> dict[str, Any]:
    """The config of dataset ``name`` (``dataset/NAME.yaml``), validated against its schema."""
    import yaml

    for directory in dataset_dirs():
        path = directory / f"{name}.yaml"
        if path.is_file():
            try:
                conf = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise DataError(f"{path}: not valid YAML ({exc})") from exc
            return _checked(conf, str(path))
    names = available()
    close = closest(name, names, cutoff=0.5)
    hint = f"did you mean '{close}'? " if close else ""
    raise DataError(f"dataset {name!r}: no such dataset; {hint}(available: {', '.join(names)})")


def _checked(conf: Any, where: str) -> dict[str, Any]:
    from ..config.validate import _check_discriminated
    from ..core.errors import ConfigError

    if not isinstance(conf, dict):
        raise DataError(f"{where}: expected a mapping of dataset settings")
    conf = {k: v for k, v in conf.items() if k != "defaults"}
    try:
        _check_discriminated(conf, "dataset")
    except ConfigError as exc:
        raise DataError(f"{where}: {exc}") from exc
    return conf


def _plain(config: Any) -> dict[str, Any]:
    """A plain dict of a dataset config; an OmegaConf config (itself a Mapping) resolved all the way
    down, so that no nested section stays an OmegaConf object."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(config, DictConfig):
            return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(config, Mapping):
        return dict(config)
    raise DataError(f"load_dataset: expected a dataset name or config, got {type(config).__name__}")


@dataclass
class Dataset:
    """The local files of one dataset tier and views of them."""

    name: str
    kind: str
    tier: str
    source: str
    files: list[Path]
    config: dict[str, Any] = field(repr=False, default_factory=dict)
    _handles: dict[tuple[str, bool], Any] = field(repr=False, default_factory=dict, compare=False)

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.files)

    # -- xarray -----------------------------------------------------------------------------------

    def open(self, path: Path, *, decode: bool = True) -> Any:
        """One file as an ``xarray.Dataset`` (lazy), CF-decoded unless ``decode=False``; a clear error
        for a damaged file."""
        key = (str(path), decode)
        if key not in self._handles:
            # one handle per file and view: libnetcdf has crashed reopening files with string
            # variables that another open handle had read
            self._handles[key] = open_file(path, decode=decode, hint=self._fetch_hint())
        return self._handles[key]

    def _fetch_hint(self) -> str:
        if self.kind == FILES_KIND:
            return "check the paths given to load_dataset"
        if self.source == "files":
            return "check dataset.path"
        return f"run `maelstrom data get {self.name} --tier {self.tier}`"

    def to_xarray(
        self,
        variables: Sequence[str] | None = None,
        *,
        select: Mapping[str, Any] | None = None,
        pattern: str | None = None,
        decode: bool = True,
    ) -> Any:
        """The files (those whose name matches the glob ``pattern``, when given) as one ``xarray.Dataset``,
        joined along the kind's file dimension; only ``variables`` and the ``select`` index ranges.

        Variables along the join dimension are concatenated; those along the sample dimension but
        not the join one (AP1's ``predictors`` of each forecast run), and those with other values in
        other files, are stacked along it, a new dimension when the files do not have it; the rest
        (grids, static fields the same in every file) come from the first file.
        """
        import xarray as xr

        files = self._matching(pattern)
        dim = self.concat_dimension
        parts = []
        for path in files:
            ds = self.open(path, decode=decode)
            # the join dimension's variable (AP1's scalar time) goes with the chosen ones
            keep = None if variables is None else [*variables, *([dim] if dim in ds.variables else [])]
            parts.append(self._subset(ds, path, None if keep is None else list(dict.fromkeys(keep)), select))
        if len(parts) == 1:
            return parts[0]
        # a scalar variable named as the join dimension (AP1's time) becomes its index
        parts = [part.set_coords(dim) if dim in part.data_vars else part for part in parts]
        sample = self.sample_dimension

        def per_file(name: str, var: Any) -> bool:
            if sample in var.dims:  # AP1's predictors
                return True
            # the rest (grids, static fields) once, unless a file has other values (AP1's bias_recent)
            return any(name in part and not var.equals(part[name]) for part in parts[1:])

        joined = sorted(
            {str(k) for k, v in parts[0].data_vars.items() if dim not in v.dims and per_file(str(k), v)}
        )
        try:
            return xr.concat(parts, dim=dim, data_vars=joined, coords="minimal", compat="override")
        except (ValueError, KeyError) as exc:
            raise DataError(
                f"dataset {self.name}: its files do not join along {dim!r} ({exc}); "
                "open them one by one with Dataset.open or pick some with pattern="
            ) from exc

    @property
    def sample_dimension(self) -> str:
        if self.kind == FILES_KIND:
            if not self.config.get("sample_dimension"):  # found once, in the first file
                self.config["sample_dimension"] = _guess_dimension(self.open(self.files[0]))
            return str(self.config["sample_dimension"])
        return SAMPLE_DIMENSION.get(self.kind, "time")

    @property
    def concat_dimension(self) -> str:
        if self.kind == FILES_KIND:
            return self.sample_dimension
        return CONCAT_DIMENSION.get(self.kind, "time")

    def _matching(self, pattern: str | None) -> list[Path]:
        files = [p for p in self.files if pattern is None or Path(p).match(pattern)]
        if not files:
            raise DataError(f"dataset {self.name}: no file matches {pattern!r}")
        return files

    def _subset(self, ds: Any, path: Path, variables: Sequence[str] | None, select: Mapping[str, Any] | None):
        if variables is not None:
            missing = [v for v in variables if v not in ds.variables]
            if missing:
                raise DataError(
                    f"{path}: no variable {missing[0]!r}; it has {', '.join(sorted(map(str, ds.data_vars)))}"
                )
            ds = ds[list(variables)]
        if select:
            missing = [d for d in select if d not in ds.dims]
            if missing:
                raise DataError(f"{path}: no dimension {missing[0]!r}; it has {', '.join(map(str, ds.dims))}")
            ds = ds.isel(dict(select))
        return ds

    # -- one sample per index ---------------------------------------------------------------------

    def samples(
        self, variables: Sequence[str] | None = None, pattern: str | None = None, *, decode: bool = True
    ) -> SampleIndex:
        """Random access to samples (along :data:`SAMPLE_DIMENSION`) across the files."""
        return SampleIndex(self, variables, pattern, decode=decode)

    def to_pytorch(
        self, variables: Sequence[str] | None = None, pattern: str | None = None, *, decode: bool = True
    ) -> Any:
        """A ``torch.utils.data.Dataset`` of dicts ``{variable: tensor}``, one sample per index."""
        import torch

        index = self.samples(variables, pattern, decode=decode)

        class _TorchDataset(torch.utils.data.Dataset):
            def __len__(self) -> int:
                return len(index)

            def __getitem__(self, i: int) -> dict[str, Any]:
                return {k: torch.from_numpy(v) for k, v in index[i].items()}

        return _TorchDataset()

    def to_tfdataset(
        self, variables: Sequence[str] | None = None, pattern: str | None = None, *, decode: bool = True
    ) -> Any:
        """A ``tf.data.Dataset`` of dicts ``{variable: tensor}``, one sample per element."""
        import tensorflow as tf

        index = self.samples(variables, pattern, decode=decode)
        first = index[0]
        signature = {k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype), name=k) for k, v in first.items()}

        def generate():
            for i in range(len(index)):
                yield index[i]

        return tf.data.Dataset.from_generator(generate, output_signature=signature)


class SampleIndex:
    """Sample ``i`` of a dataset: a dict of NumPy arrays, read from its file when asked for.

    A variable named in ``variables`` without the sample dimension is the same whole array in
    every sample of its file; by default only the numeric variables along the dimension are read.
    """

    def __init__(
        self, dataset: Dataset, variables: Sequence[str] | None, pattern: str | None, *, decode: bool = True
    ) -> None:
        import numpy as np

        self.dim = dataset.sample_dimension
        self.parts = []
        for path in dataset._matching(pattern):
            ds = dataset.open(path, decode=decode)
            names = (
                list(variables)
                if variables is not None
                else [
                    str(k) for k, v in ds.data_vars.items() if self.dim in v.dims and v.dtype.kind in "fiub"
                ]
            )
            if not names:
                continue
            ds = dataset._subset(ds, path, names, None)
            if self.dim not in ds.dims:
                raise DataError(
                    f"{path}: none of {', '.join(names)} has the sample dimension {self.dim!r} "
                    f"(dimensions: {', '.join(map(str, ds.dims)) or 'none'})"
                )
            self.parts.append((ds, names, int(ds.sizes[self.dim])))
        if not self.parts:
            raise DataError(
                f"dataset {dataset.name}: no numeric variable along {self.dim!r} in its files; "
                "name the variables to read"
            )
        self.offsets = np.cumsum([0] + [n for _, _, n in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        import numpy as np

        if not 0 <= i < len(self):
            raise IndexError(i)
        part = int(np.searchsorted(self.offsets, i, side="right")) - 1
        ds, names, _ = self.parts[part]
        local = i - int(self.offsets[part])
        return {
            name: np.ascontiguousarray(
                ds[name].isel({self.dim: local}).values if self.dim in ds[name].dims else ds[name].values
            )
            for name in names
        }


# -- opening one file ---------------------------------------------------------------------------


def open_file(path: str | os.PathLike[str], *, decode: bool = True, hint: str = "check the path") -> Any:
    """One NetCDF (or CSV) file as a lazy ``xarray.Dataset``, decoded as ``xarray.open_dataset(path)``
    does by default (``decode=False``: the raw stored values). NetCDF3 files that libnetcdf cannot
    read are read with scipy. Errors are one line naming the file; ``hint`` says what to do."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; {hint}")
    if path.suffix == ".csv":
        import pandas as pd

        frame = pd.read_csv(path)
        frame.index.name = "index"
        return xr.Dataset.from_dataframe(frame)
    flavour = netcdf_flavour(path)
    size = path.stat().st_size
    if flavour is None:
        raise DataError(
            f"{path}: not a NetCDF file ({size} bytes, neither HDF5 nor CDF at its start); {hint}"
        )
    engines = ["netcdf4", "scipy"] if flavour in ("cdf1", "cdf2") else ["netcdf4"]
    errors = []
    for engine in engines:
        try:
            return xr.open_dataset(path, engine=engine, decode_cf=decode)
        except Exception as exc:  # noqa: BLE001 - a damaged file fails in many ways, each engine its own
            errors.append(f"{engine}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    what = "NetCDF4/HDF5" if flavour == "hdf5" else f"NetCDF3 ({flavour.upper()})"
    raise DataError(
        f"{path}: a {what} file that cannot be read ({size} bytes; truncated or corrupted?): "
        f"{'; '.join(errors)}; {hint}"
    )


def _guess_dimension(ds: Any) -> str:
    """The sample dimension of a user's file: its unlimited dimension, ``time``, or else the first
    dimension of its first variable with the most dimensions."""
    unlimited = ds.encoding.get("unlimited_dims") or ()
    for name in unlimited:
        return str(name)
    if "time" in ds.dims:
        return "time"
    variables = sorted(ds.data_vars.values(), key=lambda v: -v.ndim)
    if variables and variables[0].ndim:
        return str(variables[0].dims[0])
    if ds.dims:
        return str(next(iter(ds.dims)))
    return "time"


# -- resolving files ----------------------------------------------------------------------------


def remote_requests(config: Mapping[str, Any], tier: str, dataset: str | None = None) -> list[Request]:
    """The files of ``tier`` of the dataset's remote source, with their checksums and sizes."""
    remote = config.get("remote") or {}
    name = config.get("name") or config.get("kind")
    tiers = remote.get("tiers") or {}
    if tier not in tiers:
        options = ", ".join(sorted(tiers)) or "none"
        raise DataError(f"dataset.remote.tiers: no tier {tier!r} for {name} (remote tiers: {options})")
    spec = tiers[tier] or {}
    base = s3_to_https(str(remote["url"]), str(remote.get("endpoint") or "https://s3.amazonaws.com"))
    checksums = remote.get("checksums") or {}
    names: list[tuple[str, int | None]] = []
    if spec.get("pattern"):
        values = spec.get("values") or {}
        keys = list(values)
        for combo in itertools.product(*(values[k] for k in keys)):
            try:
                names.append((spec["pattern"].format(**dict(zip(keys, combo, strict=True))), None))
            except KeyError as exc:
                raise DataError(
                    f"dataset.remote.tiers.{tier}.pattern: no values for {{{exc.args[0]}}}"
                ) from exc
    names += [(f, None) for f in spec.get("files") or []]
    if spec.get("prefix") is not None:
        names += [(key, size) for key, size in list_objects(base, str(spec["prefix"]))]
    if not names:
        raise DataError(f"dataset.remote.tiers.{tier}: no files (give pattern, files or prefix)")
    return [Request(join(base, n), checksums.get(n), size, dataset or name) for n, size in names]


def _local_files(config: Mapping[str, Any], what: str = "dataset.path") -> list[Path]:
    location = config.get("path")
    if not location:
        raise DataError(
            "dataset.path: set it to a directory or glob of the dataset's files for source 'files'"
        )
    path = Path(str(location)).expanduser()
    pattern = str(path / "*") if path.is_dir() else str(path)
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        if not glob.has_magic(pattern) and not path.is_dir():
            raise DataError(f"{what}: {pattern}: no such file")
        raise DataError(f"{what}: {pattern} matches no file")
    return files


_FILE_SUFFIXES = (".nc", ".nc4", ".nc3", ".cdf", ".netcdf", ".h5", ".hdf5", ".he5", ".csv")


def _is_local(name_or_config: Any) -> bool:
    """A path, glob or list of paths rather than a dataset name or config."""
    if isinstance(name_or_config, os.PathLike):
        return True
    if isinstance(name_or_config, str):
        s = name_or_config
        return os.sep in s or "/" in s or glob.has_magic(s) or s.lower().endswith(_FILE_SUFFIXES)
    return isinstance(name_or_config, Sequence) and not isinstance(name_or_config, str | bytes)


def local_dataset(where: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> Dataset:
    """The dataset of local files: a path, a directory, a glob or a list of them (kind ``files``)."""
    entries = [where] if isinstance(where, str | os.PathLike) else list(where)
    if not entries:
        raise DataError("load_dataset: an empty list of files; give a path, a glob or a list of paths")
    files: list[Path] = []
    for entry in entries:
        files += _local_files({"path": str(entry)}, what="load_dataset")
    first = Path(str(entries[0]))
    name = (
        first.stem if len(entries) == 1 and not glob.has_magic(str(first)) else first.parent.name or "files"
    )
    config = {"kind": FILES_KIND, "name": name, "source": "files", "path": [str(e) for e in entries]}
    return Dataset(name=name, kind=FILES_KIND, tier="files", source="files", files=files, config=config)


def _sample_files(config: Mapping[str, Any], tier: str, cache_dir: Path) -> list[Path]:
    kind = str(config["kind"])
    tiers = config.get("tiers") or {}
    if tier not in tiers:
        raise DataError(f"dataset.tiers: no sizes for the tier {tier!r} (tiers: {', '.join(sorted(tiers))})")
    target = SAMPLE_GENERATORS.get(kind)
    if target is None:
        raise DataError(f"dataset.kind {kind!r}: no sample generator; use source 'files' or 'remote'")
    module, _, func = target.partition(":")
    return list(getattr(importlib.import_module(module), func)(cache_dir, tiers[tier], seed=0))


def load_dataset(
    name_or_config: str | Mapping[str, Any] | Any,
    tier: str | None = None,
    *,
    source: str | None = None,
    cache: Cache | None = None,
    verify: bool = False,
    progress: Meter | None = None,
) -> Dataset:
    """The files of a dataset tier, generated, found or fetched into the cache as its source says.

    ``name_or_config``: a dataset name (``ap1`` .. ``ap6``, or one of ``$MAELSTROM_CONFIG_PATH``),
    a dataset config (``cfg.dataset``), or local files: a path, a glob or a list of paths. ``tier``: a key of ``tiers`` (sample sizes) or of
    ``remote.tiers`` (default ``tiny``). ``source``: ``sample``, ``files`` or ``remote`` (default: the
    config's, or ``remote`` for a tier only the remote source has).
    """
    if _is_local(name_or_config):
        return local_dataset(name_or_config)
    if isinstance(name_or_config, str):
        name = name_or_config
        config = dataset_config(name)
    else:
        config = _checked(_plain(name_or_config), "dataset")
        name = str(config.get("name") or config.get("kind"))
    tier = tier or "tiny"
    remote_tiers = ((config.get("remote") or {}).get("tiers")) or {}
    if source is None:
        source = str(config.get("source") or "sample")
        if source == "sample" and tier not in (config.get("tiers") or {}) and tier in remote_tiers:
            source = "remote"
    sample_tiers = config.get("tiers") or {}
    if source != "files" and tier not in sample_tiers and tier not in remote_tiers:
        raise DataError(
            f"dataset {name}: no tier {tier!r}; sample tiers: {', '.join(sorted(sample_tiers)) or 'none'}, "
            f"remote tiers: {', '.join(sorted(remote_tiers)) or 'none'}"
        )
    cache = cache or Cache()
    if source == "sample":
        files = _sample_files(config, tier, cache.root)
    elif source == "files":
        files = _local_files(config)
    elif source == "remote":
        if not config.get("remote"):
            raise DataError(f"dataset {name}: no remote source in its config (dataset.remote.url)")
        requests = remote_requests(config, tier, name)
        files = cache.fetch_many(
            requests, verify=verify, meter=progress or None, description=f"{name} {tier}"
        )
    else:
        raise DataError(f"source {source!r}: not one of sample, files, remote")
    if verify and source != "remote":  # downloads are checked by their sha256; these by opening them
        hint = (
            f"remove it (maelstrom data cache clear --dataset {name} --yes) and get it again"
            if source == "sample"
            else "replace it with an intact copy"
        )
        for path in files:
            open_file(path, decode=False, hint=hint).close()
    dataset = Dataset(
        name=name, kind=str(config["kind"]), tier=tier, source=source, files=files, config=config
    )
    _LOADED.append(dataset)
    return dataset


#: The datasets this process loaded, in order (the worker logs them as the run's MLflow inputs).
_LOADED: list[Dataset] = []


def loaded() -> list[Dataset]:
    """The datasets :func:`load_dataset` returned in this process, each once (by name, tier, source)."""
    seen: dict[tuple[str, str, str], Dataset] = {}
    for dataset in _LOADED:
        seen.setdefault((dataset.name, dataset.tier, dataset.source), dataset)
    return list(seen.values())


__all__ = ["Dataset", "available", "dataset_config", "load_dataset", "local_dataset", "open_file"]
