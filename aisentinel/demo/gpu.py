"""The demo's GPUs: the fake NVML library when it can be built here, else a simulation.

With gcc and the checkout's ``tests/fakenvml/fakenvml.c``, the fake
``libnvidia-ml.so.1`` is compiled into the demo's work directory and loaded into this
process (pynvml then opens it by its SONAME), and the daemon's ``nvml`` source samples
it exactly as it samples a real GPU. Without them (the package ships no C source) a
**simulated sampler**, labelled as such in the demo's output with the reason, hands the
daemon the same GPU samples directly.

The story (:class:`GpuStory`, paced on the wall clock over the demo's run), on two
GPUs, with real processes so that ``/proc`` attribution is real:

* GPU 0 runs ``ollama`` (a copy of ``sleep`` by that name: an allowed AI workload),
  lightly used;
* a miner appears on GPU 1: a real short-lived process named ``xmrig``, 100% busy
  (``gpu_workload``: HIGH, mining by its name);
* GPU-time theft: GPU 0 runs flat out while an unauthenticated client
  (``2001:db8:0:5a::50``) floods ``/v1/chat/completions`` in ``gpu-api.log``
  (``gpu_theft``: the client would be banned; the serving workload gets an alert).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from aisentinel.events import EventBatch, GpuProcessSample, GpuSample
from aisentinel.gpu.attribution import ProcessAttributor
from aisentinel.textsafe import escape

GPU_API_LOG: Final = "gpu-api.log"
THIEF: Final = "2001:db8:0:5a::50"
"""Outside what the scenario hands out (its IPv6 attackers never have a 0 third group)."""
FAKE_SOURCE: Final = Path(__file__).resolve().parents[2] / "tests" / "fakenvml" / "fakenvml.c"
SONAME: Final = "libnvidia-ml.so.1"
THEFT_END: Final = 0.85
"""The GPU-time theft ends at this fraction of the run."""
GiB: Final = 1 << 30
UUIDS: Final = (
    "GPU-5e3a1f00-0d3c-4a8e-9b1e-000000000000",
    "GPU-5e3a1f00-0d3c-4a8e-9b1e-000000000001",
)


def gcc_argv(gcc: str, source: Path, lib: Path, *extra: str) -> list[str]:
    """The gcc command that builds the fake NVML ``lib`` from ``source`` (``extra``:
    more flags, the tests' warnings)."""
    return [
        gcc,
        "-std=c11",
        "-O2",
        *extra,
        "-fPIC",
        "-shared",
        "-fvisibility=hidden",
        "-pthread",
        f"-Wl,-soname,{SONAME}",
        "-o",
        str(lib),
        str(source),
    ]


def build_fake(out_dir: Path, source: Path = FAKE_SOURCE) -> tuple[Path | None, str]:
    """Compile the fake NVML into ``out_dir``: the library, or ``None`` and why not (the C
    source missing, as in the package; no gcc; the compiler's first error line)."""
    if not source.is_file():
        return None, f"its C source {source} is not here (only a source checkout has it)"
    gcc = shutil.which("gcc")
    if gcc is None:
        return None, "no gcc"
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / SONAME
    try:
        result = subprocess.run(
            gcc_argv(gcc, source, lib), capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"gcc could not be run ({type(exc).__name__}: {exc})"
    if result.returncode != 0:
        lines = result.stderr.decode(errors="replace").splitlines()
        first = next((line for line in lines if "error" in line), lines[0] if lines else "")
        return None, f"gcc failed (exit {result.returncode}): {escape(first, limit=200)}"
    return lib, ""


class GpuStory:
    """The demo's GPU timeline; see the module docstring."""

    def __init__(self, workdir: Path, duration: float) -> None:
        self.dir = workdir / "gpu"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.duration = duration
        self.scenario = self.dir / "nvml-scenario"
        lib, self.why_simulated = build_fake(self.dir)
        self.simulated = lib is None
        if lib is not None:
            ctypes.CDLL(str(lib))  # pynvml's CDLL("libnvidia-ml.so.1") now gets the fake
            os.environ["FAKE_NVML_SCENARIO"] = str(self.scenario)
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._emit: Callable[[EventBatch], None] | None = None
        self._attributor = ProcessAttributor()
        self._t = 0.0
        """Seconds into the timeline at its last step."""
        self._write(0.0)

    @property
    def label(self) -> str:
        """How the GPUs are made, for the demo's output."""
        if self.simulated:
            return (
                f"SIMULATED GPU sampler (the fake NVML library cannot be built: "
                f"{self.why_simulated})"
            )
        return f"fake libnvidia-ml.so.1 built in {self.dir} (the real pynvml samples it)"

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        sleep = shutil.which("sleep") or "/bin/sleep"
        exe = self.dir / name
        if not exe.exists():
            shutil.copy(sleep, exe)
        proc = subprocess.Popen([str(exe), str(int(self.duration) + 30)])
        self._procs[name] = proc
        return proc

    def start(self, emit: Callable[[EventBatch], None]) -> None:
        """Start the processes and the timeline (``emit`` is used when simulated)."""
        self._emit = emit
        self._spawn("ollama")
        self._write(0.0)
        self._thread = threading.Thread(target=self._run, name="demo-gpu", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the timeline and the processes."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for proc in self._procs.values():
            proc.kill()
            proc.wait()

    # ------------------------------------------------------------------ timeline

    def _phase(self, t: float) -> tuple[bool, bool]:
        """(miner running, theft under way) at ``t`` seconds into the run."""
        d = self.duration
        return t >= 0.15 * d, 0.3 * d <= t < THEFT_END * d

    @property
    def theft_played(self) -> bool:
        """Whether the timeline has run past the GPU-time theft (not when stopped early)."""
        return self._t >= THEFT_END * self.duration

    def _run(self) -> None:
        start = time.monotonic()
        log = self.logs / GPU_API_LOG
        while not self._stop.wait(0.5):
            t = self._t = time.monotonic() - start
            miner, theft = self._phase(t)
            if miner and "xmrig" not in self._procs:
                self._spawn("xmrig")
            if theft:
                self._flood(log)
            self._write(t)
            if self.simulated and self._emit is not None:
                self._emit(EventBatch("gpu (simulated)", list(self._samples(t)), time.monotonic()))

    def _flood(self, log: Path) -> None:
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime())
        line = (
            f'{THIEF} - - [{stamp}] "POST /v1/chat/completions HTTP/1.1" 200 2048 "-" '
            '"python-requests/2.31"\n'
        )
        with log.open("a", encoding="utf-8") as fh:
            fh.write(line * 60)  # 120 a second: more than the users' own traffic

    def _layout(self, t: float) -> list[tuple[int, int, list[tuple[str, int, int]]]]:
        """Per GPU: (utilization %, used bytes, [(process, used bytes, SM %)])."""
        miner, theft = self._phase(t)
        util0 = 97 if theft else 20
        gpu0 = (util0, (40 if theft else 24) * GiB, [("ollama", 22 * GiB, util0)])
        gpu1: tuple[int, int, list[tuple[str, int, int]]] = (0, 1 * GiB, [])
        if miner and "xmrig" in self._procs:
            gpu1 = (100, 6 * GiB, [("xmrig", 5 * GiB, 100)])
        return [gpu0, gpu1]

    def _write(self, t: float) -> None:
        if self.simulated:
            return
        lines = ["driver 550.54.15", "nvml 12.550.54.15"]
        for index, (util, used, procs) in enumerate(self._layout(t)):
            lines += [
                f"device {index}",
                f"uuid {UUIDS[index]}",
                f"pci 00000000:{0x3B + index:02X}:00.0",
                "name NVIDIA L40S",
                f"util {util} {util // 3}",
                f"memory {48 * GiB} {used} {48 * GiB - used} 0",
                f"temperature {40 + util // 3}",
                f"power {80_000 + util * 2_500}",
                f"energy {int(1e9) + int(t * 1000) * (util + 1)}",
            ]
            for name, mem, sm in procs:
                proc = self._procs.get(name)
                if proc is not None:
                    lines.append(f"process {proc.pid} {mem} {sm} {sm // 4}")
        tmp = self.scenario.with_name("nvml-scenario.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        tmp.replace(self.scenario)

    def _samples(self, t: float) -> list[GpuSample]:
        out = []
        now = time.time()
        for index, (util, used, procs) in enumerate(self._layout(t)):
            listed = []
            for name, mem, sm in procs:
                proc = self._procs.get(name)
                if proc is None:
                    continue
                listed.append(
                    GpuProcessSample(
                        index,
                        UUIDS[index],
                        proc.pid,
                        "compute",
                        mem,
                        sm / 100,
                        sm / 400,
                        self._attributor.attribute(proc.pid),
                    )
                )
            out.append(
                GpuSample(
                    ts=now,
                    index=index,
                    uuid=UUIDS[index],
                    name="NVIDIA L40S (simulated)",
                    pci_bus_id=f"0000:{0x3B + index:02x}:00",
                    lost=False,
                    utilization_gpu=util / 100,
                    utilization_memory=util / 300,
                    memory_total_bytes=48 * GiB,
                    memory_used_bytes=used,
                    memory_free_bytes=48 * GiB - used,
                    memory_reserved_bytes=0,
                    temperature_celsius=40 + util / 3,
                    power_watts=80 + util * 2.5,
                    energy_joules=1e6 + t * (util + 1),
                    ecc_corrected=0,
                    ecc_uncorrected=0,
                    throttle_reasons=0,
                    mig_enabled=False,
                    processes=tuple(listed),
                )
            )
        return out
