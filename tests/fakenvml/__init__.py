"""Build and drive the fake ``libnvidia-ml.so.1`` (fakenvml.c) from tests and bench.

``build(out_dir)`` compiles the library with gcc; :class:`Scenario` writes the file the
library reads (its path in ``FAKE_NVML_SCENARIO``), atomically, so a test rewrites it
while a sampler runs. ``load(lib)`` loads it into this process: pynvml opens
``libnvidia-ml.so.1`` by name, and the dynamic loader answers that name with an
already-loaded library whose SONAME it is, so the real pynvml code runs against the
fake. A subprocess gets it through ``LD_LIBRARY_PATH`` instead.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aisentinel.demo.gpu import SONAME, gcc_argv

SOURCE = Path(__file__).with_name("fakenvml.c")
ENV = "FAKE_NVML_SCENARIO"


def build(out_dir: Path) -> Path:
    """Compile fakenvml.c into ``out_dir/libnvidia-ml.so.1``; returns its path."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise FileNotFoundError("gcc")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / SONAME
    warnings = ("-Wall", "-Wextra", "-Werror", "-Wconversion")
    argv = gcc_argv(gcc, SOURCE, lib, *warnings)
    subprocess.run(argv, check=True, capture_output=True, text=True)
    return lib


def load(lib: Path) -> ctypes.CDLL:
    """Load the fake into this process (pynvml's ``CDLL("libnvidia-ml.so.1")`` gets it)."""
    fake = ctypes.CDLL(str(lib))
    fake.fakenvml_calls.restype = ctypes.c_ulonglong
    return fake


@dataclass
class FakeProcess:
    """One process on a fake GPU; ``sm``/``mem`` None means no utilization sample."""

    pid: int
    used_bytes: int | None = 1 << 30
    sm: int | None = 0
    mem: int | None = 0
    kind: str = "compute"

    def line(self) -> str:
        used = "na" if self.used_bytes is None else str(self.used_bytes)
        util = "- -" if self.sm is None or self.mem is None else f"{self.sm} {self.mem}"
        return f"process {self.pid} {used} {util} {self.kind}"


@dataclass
class FakeGpu:
    """One fake GPU; ``errors`` maps an NVML function name (or ``*``) to an error name,
    or to ``HANG``: the call blocks until a scenario without that entry is written."""

    uuid: str = ""
    name: str = "NVIDIA H100 80GB HBM3"
    pci: str = ""
    util_gpu: int = 0
    util_mem: int = 0
    mem_total: int = 80 << 30
    mem_used: int = 0
    mem_free: int = 80 << 30
    mem_reserved: int = 0
    temperature: int = 40
    power_mw: int = 70_000
    energy_mj: int = 1_000_000
    ecc: tuple[int, int] = (0, 0)
    throttle: int = 0
    mig: tuple[int, int] = (0, 0)
    events: int = 0x1F
    processes: list[FakeProcess] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    xids: list[tuple[int, int]] = field(default_factory=list)

    def lines(self, index: int) -> list[str]:
        out = [f"device {index}"]
        if self.uuid:
            out.append(f"uuid {self.uuid}")
        if self.pci:
            out.append(f"pci {self.pci}")
        out += [
            f"name {self.name}",
            f"util {self.util_gpu} {self.util_mem}",
            f"memory {self.mem_total} {self.mem_used} {self.mem_free} {self.mem_reserved}",
            f"temperature {self.temperature}",
            f"power {self.power_mw}",
            f"energy {self.energy_mj}",
            f"ecc {self.ecc[0]} {self.ecc[1]}",
            f"throttle {self.throttle:#x}",
            f"mig {self.mig[0]} {self.mig[1]}",
            f"events {self.events:#x}",
        ]
        out += [p.line() for p in self.processes]
        out += [f"error {fn} {code}" for fn, code in self.errors.items()]
        out += [f"xid {seq} {code}" for seq, code in self.xids]
        return out


@dataclass
class Scenario:
    """The whole fake machine; ``write`` replaces the file atomically."""

    gpus: list[FakeGpu] = field(default_factory=list)
    driver: str = "550.54.15"
    nvml: str = "12.550.54.15"
    init_error: str | None = None
    errors: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        out = [f"driver {self.driver}", f"nvml {self.nvml}"]
        if self.init_error:
            out.append(f"init_error {self.init_error}")
        out += [f"error {fn} {code}" for fn, code in self.errors.items()]
        for index, gpu in enumerate(self.gpus):
            out += gpu.lines(index)
        return "\n".join(out) + "\n"

    def write(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.text(), encoding="utf-8")
        tmp.replace(path)
