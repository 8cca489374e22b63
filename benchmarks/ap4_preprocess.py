"""AP4 epoch time: reading the ENS-10 NetCDF files directly against the preprocessed arrays.

    python benchmarks/ap4_preprocess.py [--lat 361 --lon 720 --dates 2 --years 5]
                                        [--model mlp|unet] [--points 4096] [--epochs 3]

Generates ENS-10 sample files (pressure levels 500 and 850 hPa, step 48 h, deflate-compressed
as the ENS-10 NetCDF files are) of the full 0.5 degree grid into a temporary cache, preprocesses
them (``maelstrom data preprocess``'s code: streaming statistics, then normalised per-sample
arrays) and trains the same model on the same samples in the same order, once from
:class:`NetCDFENS10` (every step reads and normalises the NetCDF fields) and once from
:class:`PreprocessedENS10` (memory-mapped arrays). Each side runs one warm-up epoch (page cache
warm for both), then ``--epochs`` measured epochs; the median epoch times are compared.

The default model is the ENS-10 MLP trained on ``--points`` grid points drawn per sample and
step (``model.points``); ``--points 0`` trains on every point and ``--model unet`` on whole fields,
where the model's own compute on 2 CPU cores dominates both sides.

Target: epoch time NetCDF-direct / preprocessed >= 5; exits 1 when missed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

TARGET = 5.0


def _epochs(data, model_cfg, args, n_epochs: int) -> list[float]:
    import numpy as np
    import torch

    from maelstrom_run.apps.ap4.model import location_features
    from maelstrom_run.apps.ap4.train import OPTIMIZERS, build_model, run_epoch
    from maelstrom_run.tracking.timer import PhaseTimer

    torch.manual_seed(0)
    n_in = len(data.channels) - 3
    model = build_model(model_cfg, n_in)
    optimizer = OPTIMIZERS["adam"](model.parameters(), lr=1e-3)
    location = location_features(torch.from_numpy(data.latitude), torch.from_numpy(data.longitude))
    rng = np.random.default_rng(0)
    order_rng = np.random.default_rng(1)
    times = []
    for _ in range(n_epochs):
        order = order_rng.permutation(len(data))
        start = time.perf_counter()
        run_epoch(
            model,
            optimizer,
            data,
            order,
            args.batch,
            location,
            args.points or None,
            rng,
            PhaseTimer(),
            torch.device("cpu"),
        )
        times.append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lat", type=int, default=361)
    parser.add_argument("--lon", type=int, default=720)
    parser.add_argument("--dates", type=int, default=2)
    parser.add_argument("--years", type=int, default=5)
    parser.add_argument("--model", choices=["mlp", "unet"], default="mlp")
    parser.add_argument(
        "--points", type=int, default=4096, help="MLP grid points per sample and step; 0: all"
    )
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs per side (after one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dir", help="keep the generated files here (default: a temporary directory)")
    args = parser.parse_args()

    import torch
    from rich.table import Table

    from maelstrom_run.commands.console import make_console
    from maelstrom_run.data import ens10
    from maelstrom_run.data.preprocess import NetCDFENS10, PreprocessedENS10, compute_stats, plan, preprocess

    torch.set_num_threads(args.threads)
    console = make_console(stderr=True)
    root = Path(args.dir or tempfile.mkdtemp(prefix="ap4-bench-"))
    try:
        sizes = {
            "dates": args.dates,
            "years": args.years,
            "lat": args.lat,
            "lon": args.lon,
            "levels": [500, 850],
            "steps": [48],
        }
        t0 = time.perf_counter()
        source = ens10.ensure_ap4(root / "cache", sizes, kinds=("pl",))
        generate_s = time.perf_counter() - t0
        netcdf_bytes = sum(f.stat().st_size for f in source.iterdir())
        config = {
            "dataset": {
                "kind": "ap4",
                "source": "files",
                "path": str(source),
                "target": "t850",
                "step": 48,
                "validation_fraction": 0.0,
            },
            "train": {"tier": "full"},
        }
        p = plan(config, root / "cache")
        out = root / "preprocessed"
        shutil.rmtree(out, ignore_errors=True)
        result = preprocess(p, out)
        arrays_bytes = sum(f.stat().st_size for f in (out / "samples").iterdir())
        console.print(
            f"{len(p.samples())} samples of {p.shape[1]}x{p.shape[2]} points, {p.shape[0]} channels; "
            f"NetCDF {netcdf_bytes / 1e6:.0f} MB (generated in {generate_s:.1f} s), "
            f"arrays {arrays_bytes / 1e6:.0f} MB"
        )
        stats = compute_stats(p, out)
        if args.model == "mlp":
            model_cfg = SimpleNamespace(arch="mlp", loss="crps", hidden=[128])
        else:
            model_cfg = SimpleNamespace(
                arch="unet", loss="crps", filters=32, levels=2, kernel_size=3, dropout=0.0
            )
        direct = NetCDFENS10(p, stats, "all")
        arrays = PreprocessedENS10(out, "all")
        n = args.epochs + 1
        t_direct = _epochs(direct, model_cfg, args, n)[1:]
        t_arrays = _epochs(arrays, model_cfg, args, n)[1:]
        direct.close()
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)

    med_direct, med_arrays = statistics.median(t_direct), statistics.median(t_arrays)
    ratio = med_direct / med_arrays
    what = f"{args.model}" + (f", {args.points} points/sample" if args.model == "mlp" and args.points else "")
    table = Table(
        title=f"AP4 epoch time ({what}, batch {args.batch}, {args.threads} threads, {os.cpu_count()} CPUs)"
    )
    for column in ("", "median s", "runs s"):
        table.add_column(column)
    table.add_row("NetCDF direct", f"{med_direct:.3f}", " ".join(f"{t:.3f}" for t in t_direct))
    table.add_row("preprocessed arrays", f"{med_arrays:.3f}", " ".join(f"{t:.3f}" for t in t_arrays))
    table.add_row(
        "preprocessing",
        f"{result.seconds:.3f}",
        f"statistics {result.stats_seconds:.3f}, arrays {result.seconds - result.stats_seconds:.3f}",
    )
    make_console().print(table)
    ok = ratio >= TARGET
    verdict = "[green]ok[/]" if ok else "[red]missed[/]"
    saved = med_direct - med_arrays
    payback = (
        f"after {(result.seconds - result.stats_seconds) / saved:.1f} epochs"
        if saved > 0
        else "never at these settings"
    )
    make_console().print(
        f"ratio NetCDF-direct / preprocessed: {ratio:.2f} (target >= {TARGET:g}) {verdict}; writing the arrays "
        f"(the statistics both sides need aside) pays for itself {payback}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
