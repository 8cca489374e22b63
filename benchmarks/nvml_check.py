"""Check the NVML readers against a real GPU: names, count and the energy counter over some work.

Run on a machine with an NVIDIA GPU and driver (``nvidia-ml-py`` installed)::

    .venv/bin/python benchmarks/nvml_check.py [--seconds 5]

Prints the ``host.*`` tags and the energy of each GPU over a few seconds of matrix products
(PyTorch on CUDA when it is there, else the GPU idles), and exits 1 if NVML is not usable or a GPU
that has an energy counter reports none.
"""

from __future__ import annotations

import argparse
import sys
import time

from maelstrom_run.tracking import energy, hardware


def busy(seconds: float) -> str:
    try:
        import torch

        if torch.cuda.is_available():
            a = torch.randn(4096, 4096, device="cuda")
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                a = (a @ a).clamp_(-1, 1)
            torch.cuda.synchronize()
            return "torch matmul on cuda"
    except ImportError:
        pass
    time.sleep(seconds)
    return "idle (no torch with CUDA)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    nvml = hardware.load_nvml()
    if nvml is None:
        print("NVML not usable (nvidia-ml-py missing, no driver or no GPU)")
        return 1
    for key, value in sorted(hardware.tags(nvml=nvml).items()):
        print(f"{key:22} {value}")
    meter = energy.Meter(nvml)
    meter.start()
    started = time.perf_counter()
    work = busy(args.seconds)
    elapsed = time.perf_counter() - started
    readings = [r for r in meter.stop() if r.sensor == "nvml"]
    print(f"work: {work}, {elapsed:.1f} s")
    for r in readings:
        print(f"{r.zone}: {r.joules:.1f} J, {r.joules / elapsed:.1f} W mean")
    if meter.gpus and not all(r.joules > 0 for r in readings):
        print("a GPU with an energy counter reported no energy")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
