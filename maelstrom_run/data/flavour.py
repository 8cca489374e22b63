"""Which NetCDF flavour a file is, from its first bytes (no imports beyond the standard library:
the gridded loader asks it on its hot start-up path)."""

from __future__ import annotations

import os

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_CDF_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05")


def netcdf_flavour(path: str | os.PathLike[str]) -> str | None:
    """``hdf5`` (NetCDF4), ``cdf1``/``cdf2``/``cdf5`` (the classic formats) or None, from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(4)
        if head in _CDF_MAGIC:
            return "cdf" + {1: "1", 2: "2", 5: "5"}[head[3]]
        # an HDF5 superblock may follow a user block of 512, 1024, 2048 ... bytes
        for offset in (0, 512, 1024, 2048, 4096):
            f.seek(offset)
            if f.read(8) == _HDF5_MAGIC:
                return "hdf5"
    return None
