#!/usr/bin/env bash
# On a machine with a real NVIDIA GPU: sample it with aisentinel's GpuSampler for
# SECONDS (default 30) at 1 Hz while a CUDA load runs (a PyTorch matmul loop, when
# PyTorch with CUDA is importable), then print the per-sample cost, the sampled values,
# the Xid watcher's state, and the attribution of the load's process.
#
#   bench/gpu_device.sh            # from the repository root
#   SECONDS_TO_SAMPLE=10 PYTHON=/path/to/python bench/gpu_device.sh
#
# Python: $PYTHON if set, else .venv/bin/python, else python3. It needs pynvml
# (nvidia-ml-py) and structlog; the repository is put on PYTHONPATH. Where they are
# missing, a virtual environment (with system site packages, so an installed PyTorch
# stays visible) is made under $TMPDIR and the package installed into it.
# Exit status: 0 measured; 1 no NVIDIA driver/GPU or no usable Python environment.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
SAMPLE_SECONDS=${SECONDS_TO_SAMPLE:-30}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aisentinel-gpu-bench.XXXXXX")
LOAD_PID=""

cleanup() {
  if [[ -n "$LOAD_PID" ]] && kill -0 "$LOAD_PID" 2>/dev/null; then
    kill "$LOAD_PID" 2>/dev/null || true
    wait "$LOAD_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

say() { printf '== %s\n' "$*"; }

# ---------------------------------------------------------------- driver and GPU
LIBS=$(ldconfig -p 2>/dev/null || true)
if [[ "$LIBS" != *libnvidia-ml.so.1* ]]; then
  found=""
  IFS=: read -r -a extra <<<"${LD_LIBRARY_PATH:-}"
  for dir in "${extra[@]}" /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu /usr/lib64 \
    /usr/lib /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
    if [[ -n "$dir" && -e "$dir/libnvidia-ml.so.1" ]]; then found=$dir; break; fi
  done
  if [[ -z "$found" ]]; then
    say "no libnvidia-ml.so.1 on this machine: no NVIDIA driver installed; nothing to measure"
    exit 1
  fi
  export LD_LIBRARY_PATH="$found${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if command -v nvidia-smi >/dev/null; then
  say "nvidia-smi"
  timeout 30 nvidia-smi --query-gpu=index,name,uuid,driver_version,memory.total --format=csv || say "nvidia-smi failed (rc $?)"
else
  say "nvidia-smi not found (the library is there; continuing)"
fi

# ---------------------------------------------------------------- Python environment
if [[ -n "${PYTHON:-}" ]]; then
  PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then
  PY=.venv/bin/python
else
  PY=python3
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! timeout 60 "$PY" -c 'import pynvml, structlog, aisentinel.gpu.sampler' 2>/dev/null; then
  say "$PY lacks pynvml/structlog: installing the package into a venv under $WORK"
  if ! timeout 60 "$PY" -m venv --system-site-packages "$WORK/venv" \
    || ! timeout 600 "$WORK/venv/bin/python" -m pip install -q "$ROOT"; then
    say "could not make a venv with the package (offline? run: pip install nvidia-ml-py structlog)"
    exit 1
  fi
  PY=$WORK/venv/bin/python
fi
say "python: $PY ($("$PY" --version 2>&1))"

# ---------------------------------------------------------------- CUDA load
if timeout 120 "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  cat >"$WORK/load.py" <<'EOF'
import sys, time
import torch
a = torch.randn(8192, 8192, device="cuda")
b = torch.randn(8192, 8192, device="cuda")
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    c = a @ b
    torch.cuda.synchronize()
EOF
  "$PY" "$WORK/load.py" "$((SAMPLE_SECONDS + 20))" &
  LOAD_PID=$!
  say "CUDA load: PyTorch matmul loop, pid $LOAD_PID (warming up 8 s)"
  sleep 8
  if ! kill -0 "$LOAD_PID" 2>/dev/null; then
    say "the CUDA load exited early; sampling an idle GPU"
    LOAD_PID=""
  fi
else
  say "PyTorch with CUDA is not available: sampling without a load"
fi

# ---------------------------------------------------------------- sampling
cat >"$WORK/sample.py" <<'EOF'
import json, statistics, sys, time
import structlog
from aisentinel.clock import SystemClock
from aisentinel.gpu.attribution import ProcessAttributor
from aisentinel.gpu.sampler import GpuSampler
from aisentinel.gpu.xid import XidWatcher

seconds, load_pid = int(sys.argv[1]), int(sys.argv[2] or 0)
clock = SystemClock()
xids = []
watcher = XidWatcher(xids.append, clock)
watcher.start()
sampler = GpuSampler(clock, attributor=ProcessAttributor())
wall, cpu, readings = [], [], []
next_at = time.monotonic()
for _ in range(seconds):
    w0, c0 = time.perf_counter(), time.process_time()
    reading = sampler.sample()
    wall.append((time.perf_counter() - w0) * 1e6)
    cpu.append((time.process_time() - c0) * 1e6)
    readings.append(reading)
    next_at += 1.0
    time.sleep(max(0.0, next_at - time.monotonic()))
watch_state, watch_reason = watcher.state.value, watcher.reason
watcher.stop()
sampler.close()
last = readings[-1]
print(f"state: {last.state.value} ({last.reason}); xid watcher: {watch_state} "
      f"({watch_reason}), {len(xids)} Xid event(s) {[(x.gpu_index, x.xid) for x in xids]}")
steady = wall[1:] or wall
print(f"per-sample cost over {len(wall)} samples: first {wall[0]:.0f} us (init), then median "
      f"{statistics.median(steady):.0f} us wall, p95 {sorted(steady)[min(len(steady) - 1, int(len(steady) * .95))]:.0f} us, "
      f"mean {statistics.fmean(cpu[1:] or cpu):.0f} us CPU = "
      f"{statistics.fmean(cpu[1:] or cpu) / 1e4:.3f} % of one core at 1 Hz")
for gpu in last.gpus:
    fields = {k: getattr(gpu, k) for k in gpu.__dataclass_fields__ if k != "processes"}
    print("gpu:", json.dumps(fields))
    for proc in gpu.processes:
        att = proc.attribution
        mark = "  <- the CUDA load" if proc.pid == load_pid else ""
        print(f"  pid {proc.pid} {proc.kind} mem={proc.used_memory_bytes} sm={proc.sm_util} "
              f"mem_util={proc.memory_util}{mark}")
        if att is not None:
            print(f"    {att.label()}: exe={att.exe} user={att.user} unit={att.unit} "
                  f"container={att.container_runtime}:{att.container_id} cmdline={list(att.cmdline)[:6]}")
peak = max((g.utilization_gpu or 0.0 for r in readings for g in r.gpus), default=0.0)
print(f"peak GPU utilization over the run: {peak:.2f}")
if load_pid and not any(p.pid == load_pid for g in last.gpus for p in g.processes):
    print(f"note: the load's pid {load_pid} was not among the GPU processes NVML reported "
          "(in a container NVML reports host pids, or none without permission)")
EOF
say "sampling for $SAMPLE_SECONDS s at 1 Hz"
if ! timeout "$((SAMPLE_SECONDS + 60))" "$PY" "$WORK/sample.py" "$SAMPLE_SECONDS" "${LOAD_PID:-0}"; then
  say "sampling failed (see above)"
  exit 1
fi
say "done"
