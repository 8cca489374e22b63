"""Benchmarking: hardware tags, energy sensors, run comparison and scheduled regression checks."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from maelstrom_run.tracking import energy, hardware

# -- hardware and energy ---------------------------------------------------------------------------


class FakeNvml:
    """Stands in for ``pynvml``: GPUs with an energy counter in mJ that the test advances."""

    def __init__(self, names: list[str], energy_mj: list[int | None]) -> None:
        self.names, self.energy = names, energy_mj

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802 - NVML's names
        return len(self.names)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return self.names[handle].encode()

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        value = self.energy[handle]
        if value is None:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return value


def _zone(root: Path, name: str, label: str, energy_uj: int, range_uj: int) -> Path:
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy_uj}\n")
    (zone / "max_energy_range_uj").write_text(f"{range_uj}\n")
    return zone


def test_energy_from_nvml_and_rapl_fixtures(tmp_path: Path) -> None:
    root = tmp_path / "powercap"
    package = _zone(root, "intel-rapl:0", "package-0", 262_000_000_000, 262_143_328_850)
    _zone(root, "intel-rapl:0:0", "core", 5, 262_143_328_850)  # inside package-0: not counted twice
    dram = _zone(root, "intel-rapl:1", "dram", 1_000_000, 65_712_999_613)
    (root / "intel-rapl:2").mkdir()  # a zone this user cannot read
    (root / "intel-rapl:2" / "energy_uj").mkdir()
    nvml = FakeNvml(["NVIDIA A100-SXM4-40GB", "Tesla K80"], [5_000_000, None])
    meter = energy.Meter(nvml, powercap=root)
    assert meter.sensors == ["nvml", "rapl"] and [z.name for z in meter.zones] == ["package-0", "dram"]
    meter.start()
    nvml.energy[0] += 1_500_000  # 1500 J
    (package / "energy_uj").write_text("1000000\n")  # wrapped past max_energy_range_uj
    (dram / "energy_uj").write_text("3500000\n")  # 2.5 J
    figures = energy.metrics(meter.stop())
    assert figures == pytest.approx(
        {
            "energy.nvml.gpu0_J": 1500.0,
            "energy.nvml.total_J": 1500.0,
            "energy.rapl.package-0_J": (262_143_328_850 - 262_000_000_000 + 1_000_000) / 1e6,
            "energy.rapl.dram_J": 2.5,
            "energy.rapl.total_J": (262_143_328_850 - 262_000_000_000 + 1_000_000) / 1e6 + 2.5,
        }
    )
    tags = hardware.tags(nvml=nvml, environ={"SLURM_JOB_ID": "42", "SLURM_JOB_PARTITION": "booster"})
    assert tags["host.gpu.count"] == "2" and tags["host.gpu.model"] == "NVIDIA A100-SXM4-40GB, Tesla K80"
    assert tags["host.slurm.job_id"] == "42" and tags["host.slurm.partition"] == "booster"


def test_no_sensor_no_figure(tmp_path: Path) -> None:
    meter = energy.Meter(None, powercap=tmp_path / "absent")
    assert meter.sensors == []
    meter.start()
    assert meter.stop() == []
    tags = hardware.tags(environ={})
    assert tags["host.gpu.count"] == "0" and int(tags["host.cpu.cores"]) >= 1
    assert float(tags["host.memory.gb"]) > 0 and "host.slurm.job_id" not in tags


def test_slurm_energy_parsing_and_the_real_sacct() -> None:
    def sacct(out: str) -> Any:
        return lambda *a, **k: subprocess.CompletedProcess(a, 0, out, "")

    assert energy.slurm_energy("7", sacct("7|123456\n7.batch|100000\n7.0|20000\n")) == energy.Reading(
        "slurm", "job", 123456.0
    )
    assert energy.slurm_energy("7", sacct("7|0\n7.batch|100\n7.0|20\n")).joules == 120.0
    # a cluster that gathers no energy reports zeros: nothing measured
    assert energy.slurm_energy("7", sacct("7|0\n7.batch|0\n")) is None
    if shutil.which("sacct") is None:
        pytest.skip("no sacct here")
    assert energy.slurm_energy("999999999") is None  # the real sacct: no such job, nothing measured
