"""Where a run ran, as MLflow tags: hosts, CPU, memory, GPUs, the Slurm allocation, backend and site.

Read from the machine itself (``/proc``, ``os``), NVML through ``nvidia-ml-py`` when it can be
imported and a driver answers, and Slurm's environment. Nothing here guesses: a figure that cannot
be read is left out.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path
from typing import Any

#: Slurm environment variable -> tag.
SLURM = {
    "SLURM_JOB_ID": "host.slurm.job_id",
    "SLURM_JOB_PARTITION": "host.slurm.partition",
    "SLURM_JOB_NODELIST": "host.slurm.nodelist",
    "SLURM_JOB_NUM_NODES": "host.slurm.nodes",
    "SLURM_CLUSTER_NAME": "host.slurm.cluster",
}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_bytes(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def load_nvml() -> Any:
    """The initialised ``pynvml`` module, or None (not installed, no driver, no GPU)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - NVMLError, ImportError, a missing libnvidia-ml
        return None
    return pynvml


def gpus(nvml: Any) -> list[str]:
    """The model name of every GPU NVML sees."""
    names = []
    for index in range(nvml.nvmlDeviceGetCount()):
        name = nvml.nvmlDeviceGetName(nvml.nvmlDeviceGetHandleByIndex(index))
        names.append(name.decode() if isinstance(name, bytes) else str(name))
    return names


def tags(spec: Any = None, environ: dict[str, str] | None = None, nvml: Any = None) -> dict[str, str]:
    """``host.*`` tags of this machine and job (``spec`` gives the backend and site)."""
    env = os.environ if environ is None else environ
    out = {"host.name": socket.gethostname(), "host.cpu.cores": str(os.cpu_count() or "")}
    try:
        out["host.cpu.available"] = str(len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        pass
    model = cpu_model()
    if model:
        out["host.cpu.model"] = model
    memory = memory_bytes()
    if memory:
        out["host.memory.gb"] = f"{memory / 1e9:.1f}"
    if nvml is not None:
        names = gpus(nvml)
        out["host.gpu.count"] = str(len(names))
        if names:
            out["host.gpu.model"] = ", ".join(sorted(set(names)))
    else:
        out["host.gpu.count"] = "0"
    for variable, tag in SLURM.items():
        if env.get(variable):
            out[tag] = env[variable]
    if spec is not None:
        backend = spec.backend or {}
        out["host.backend"] = str(backend.get("kind") or backend.get("name") or "")
        out["host.site"] = env.get("MAELSTROM_SITE") or str(backend.get("name") or "")
    return {k: v for k, v in out.items() if v != ""}
