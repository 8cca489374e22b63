"""Energy to solution, only from real sensors; every figure names its sensor.

- ``nvml``: each GPU's energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since the driver
  loaded), read before and after the entry point;
- ``rapl``: the top-level RAPL zones of ``/sys/class/powercap`` (``energy_uj``, wrapping at
  ``max_energy_range_uj``) where this user may read them;
- ``slurm``: ``sacct``'s ``ConsumedEnergyRaw`` of the job (J), when the cluster gathers energy
  (a zero means it does not).

With none of them nothing is logged: an estimate is never presented as a measurement.
Metrics: ``energy.<sensor>.<zone>_J`` and ``energy.<sensor>.total_J``.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POWERCAP = Path("/sys/class/powercap")


@dataclass
class Reading:
    sensor: str  # nvml, rapl, slurm
    zone: str  # gpu0, package-0, job
    joules: float


class RaplZone:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = (path / "name").read_text().strip() if (path / "name").exists() else path.name
        try:
            self.range_uj = int((path / "max_energy_range_uj").read_text())
        except (OSError, ValueError):
            self.range_uj = 0

    def read_uj(self) -> int:
        return int((self.path / "energy_uj").read_text())


def rapl_zones(root: Path = POWERCAP) -> list[RaplZone]:
    """Readable top-level zones (``intel-rapl:0``, not the ``intel-rapl:0:0`` inside them, which
    they already count)."""
    zones = []
    for path in sorted(root.glob("*rapl:*")) if root.is_dir() else []:
        if path.name.count(":") != 1:
            continue
        try:
            zone = RaplZone(path)
            zone.read_uj()
        except (OSError, ValueError):  # root-only since CVE-2020-8694 on most systems
            continue
        zones.append(zone)
    return zones


class Meter:
    """Reads the counters at :meth:`start` and :meth:`stop`; ``stop`` returns what was used."""

    def __init__(self, nvml: Any = None, powercap: Path = POWERCAP) -> None:
        self.nvml = nvml
        self.zones = rapl_zones(powercap)
        self.gpus: list[Any] = []
        if nvml is not None:
            for index in range(nvml.nvmlDeviceGetCount()):
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                try:
                    nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                except Exception:  # noqa: BLE001 - GPUs before Volta have no energy counter
                    continue
                self.gpus.append((index, handle))
        self._start: dict[str, float] = {}

    @property
    def sensors(self) -> list[str]:
        return [name for name, present in (("nvml", self.gpus), ("rapl", self.zones)) if present]

    def _read(self) -> dict[tuple[str, str], float]:
        values: dict[tuple[str, str], float] = {}
        for index, handle in self.gpus:
            values["nvml", f"gpu{index}"] = float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle))
        for zone in self.zones:
            values["rapl", zone.name] = float(zone.read_uj())
        return values

    def start(self) -> None:
        self._start = self._read()

    def stop(self) -> list[Reading]:
        readings = []
        ranges = {zone.name: zone.range_uj for zone in self.zones}
        for (sensor, zone), end in self._read().items():
            begin = self._start.get((sensor, zone))
            if begin is None:
                continue
            used = end - begin
            if sensor == "rapl":
                if used < 0 and ranges.get(zone):
                    used += ranges[zone]  # the counter wrapped once
                joules = used / 1e6
            else:
                joules = used / 1e3  # millijoules
            if used >= 0:
                readings.append(Reading(sensor, zone, joules))
        return readings


def slurm_energy(job_id: str, run: Any = subprocess.run) -> Reading | None:
    """The job's ``ConsumedEnergyRaw`` from ``sacct`` (the allocation's line, else the sum of its
    steps), or None where Slurm measured nothing."""
    try:
        proc = run(
            ["sacct", "-j", str(job_id), "--noheader", "--parsable2", "--format=JobID,ConsumedEnergyRaw"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    whole, steps = None, 0.0
    for line in proc.stdout.splitlines():
        name, _, raw = line.partition("|")
        try:
            value = float(raw.strip())
        except ValueError:
            continue
        if name.strip() == str(job_id):
            whole = value
        elif "." in name:
            steps += value
    joules = whole if whole else steps
    return Reading("slurm", "job", joules) if joules > 0 else None


def metrics(readings: list[Reading]) -> dict[str, float]:
    out: dict[str, float] = {}
    totals: dict[str, float] = {}
    for r in readings:
        out[f"energy.{r.sensor}.{r.zone}_J"] = r.joules
        totals[r.sensor] = totals.get(r.sensor, 0.0) + r.joules
    out.update({f"energy.{sensor}.total_J": value for sensor, value in totals.items()})
    return out
