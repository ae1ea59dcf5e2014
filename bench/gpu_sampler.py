"""Per-sample cost of the GPU sampler: 8 GPUs x 64 processes, at 1 Hz, with the fake NVML.

Builds the fake ``libnvidia-ml.so.1`` (tests/fakenvml, needs gcc), writes a scenario
with ``--gpus`` GPUs and ``--procs`` processes on each, and a /proc-like tree for
those processes (exe link, cmdline, status, stat, cgroup: a third in docker scopes, a
third in services, a third bare), then times ``GpuSampler.sample()`` through the real
pynvml code. Prints microseconds per full sample (wall and CPU) and the share of one
core at ``--hz``, with and without process attribution.

    .venv/bin/python bench/gpu_sampler.py
    .venv/bin/python bench/gpu_sampler.py --gpus 8 --procs 64 --samples 300 --json

The fake answers from memory after one ``stat()`` of its scenario file per call; a real
driver answers through ioctls, so this measures aisentinel's and pynvml's own cost,
which is what the daemon adds on top of the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import fakenvml  # noqa: E402 - after the path setup above
from fakenvml import FakeGpu, FakeProcess, Scenario  # noqa: E402

from aisentinel.clock import SystemClock  # noqa: E402
from aisentinel.gpu.attribution import ProcessAttributor  # noqa: E402
from aisentinel.gpu.sampler import GpuSampler, GpuState  # noqa: E402

FIRST_PID = 100_000


def write_proc_tree(root: Path, pids: list[int]) -> None:
    """A /proc-like entry per pid, shaped like the real files."""
    for n, pid in enumerate(pids):
        d = root / str(pid)
        d.mkdir(parents=True)
        rest = " ".join(["0"] * 18 + [str(1000 + n)] + ["0"] * 30)
        (d / "stat").write_text(f"{pid} (python3) S {rest}\n")
        (d / "cmdline").write_bytes(b"python3\0-m\0vllm.entrypoints.openai.api_server\0")
        (d / "status").write_text("Name:\tpython3\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n")
        if n % 3 == 0:
            cgroup = f"0::/system.slice/docker-{pid:064x}.scope\n"
        elif n % 3 == 1:
            cgroup = f"0::/system.slice/vllm-{n}.service\n"
        else:
            cgroup = "0::/user.slice/user-1000.slice/session-3.scope\n"
        (d / "cgroup").write_text(cgroup)
        (d / "exe").symlink_to("/usr/bin/python3.11")


def measure(sampler: GpuSampler, samples: int) -> tuple[list[float], list[float]]:
    """Wall and CPU microseconds of each of ``samples`` calls (after 5 warm-up calls)."""
    for _ in range(5):
        reading = sampler.sample()
        if reading.state is not GpuState.UP:
            raise SystemExit(f"sampler not up: {reading.state} {reading.reason}")
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(samples):
        w0, c0 = time.perf_counter(), time.process_time()
        sampler.sample()
        wall.append((time.perf_counter() - w0) * 1e6)
        cpu.append((time.process_time() - c0) * 1e6)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--procs", type=int, default=64, help="processes per GPU")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--hz", type=float, default=1.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp_name:
        tmp = Path(tmp_name)
        lib = fakenvml.build(tmp / "lib")
        fake = fakenvml.load(lib)
        pids = list(range(FIRST_PID, FIRST_PID + args.gpus * args.procs))
        write_proc_tree(tmp / "proc", pids)
        scenario = Scenario(
            gpus=[
                FakeGpu(
                    uuid=f"GPU-{g:08x}-0000-0000-0000-000000000000",
                    util_gpu=90,
                    mem_used=60 << 30,
                    processes=[
                        FakeProcess(pids[g * args.procs + i], (i + 1) << 24, sm=i % 100, mem=i % 50)
                        for i in range(args.procs)
                    ],
                )
                for g in range(args.gpus)
            ]
        )
        scenario_path = tmp / "scenario"
        scenario.write(scenario_path)
        os.environ[fakenvml.ENV] = str(scenario_path)

        results = {}
        for label, attributor in (
            ("nvml only", None),
            ("nvml + attribution", ProcessAttributor(tmp / "proc")),
        ):
            sampler = GpuSampler(SystemClock(), attributor=attributor)
            calls0 = fake.fakenvml_calls()
            wall, cpu = measure(sampler, args.samples)
            calls = (fake.fakenvml_calls() - calls0) / (args.samples + 5)
            sampler.close()
            mean_cpu = statistics.fmean(cpu)
            results[label] = {
                "wall_us_median": round(statistics.median(wall), 1),
                "wall_us_p95": round(sorted(wall)[int(len(wall) * 0.95) - 1], 1),
                "cpu_us_mean": round(mean_cpu, 1),
                "core_percent_at_hz": round(mean_cpu / 1e6 * args.hz * 100, 3),
                "nvml_calls_per_sample": round(calls, 1),
            }

    shape = {"gpus": args.gpus, "procs_per_gpu": args.procs, "hz": args.hz, "samples": args.samples}
    if args.json:
        print(json.dumps({"shape": shape, "results": results}, indent=2))
        return
    print(
        f"GPU sampler, fake NVML: {args.gpus} GPUs x {args.procs} processes "
        f"({args.gpus * args.procs} pids), {args.samples} samples, at {args.hz:g} Hz"
    )
    print(
        f"{'':20} {'wall us (median)':>17} {'wall us (p95)':>14} {'cpu us (mean)':>14} "
        f"{'% of a core':>12} {'NVML calls':>11}"
    )
    for label, r in results.items():
        print(
            f"{label:20} {r['wall_us_median']:17.1f} {r['wall_us_p95']:14.1f} "
            f"{r['cpu_us_mean']:14.1f} {r['core_percent_at_hz']:12.3f} "
            f"{r['nvml_calls_per_sample']:11.1f}"
        )


if __name__ == "__main__":
    main()
