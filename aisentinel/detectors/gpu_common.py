"""Pieces the GPU detectors share: workload targets, evidence text, client windows.

Everything that comes from a process (executable, command line, unit, container name)
is process-controlled text: it is escaped (:func:`aisentinel.textsafe.escape`) and
capped before it goes into a target or a finding.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from typing import Annotated, Final

from pydantic import Field

from aisentinel.events import (
    WORKLOAD_TEXT_MAX,
    GpuProcessSample,
    GpuSample,
    ProcessAttribution,
    WorkloadKey,
    WorkloadTarget,
)
from aisentinel.textsafe import escape

Ratio = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A fraction 0-1 (utilization, memory used)."""

MaxGpus = Annotated[int, Field(ge=1, le=1024)]
"""Most GPUs a detector keeps state for."""

DEFAULT_AI_PATHS: Final = (
    "/api/generate",
    "/api/chat",
    "/api/embed*",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/images/*",
    "/v1/audio/*",
    "/generate",
    "/generate_stream",
    "/completion",
    "/infer",
    "/prompt",
    "/api/v1/generate",
    "/ollama/api/generate",
    "/ollama/api/chat",
    "/api/chat/completions",
)
"""Inference endpoints (Ollama, OpenAI-compatible/vLLM, TGI, llama.cpp, ComfyUI, Open
WebUI) in :mod:`~aisentinel.detectors.paths` syntax."""

BUCKET_SECONDS: Final = 10.0
DELETED: Final = " (deleted)"
"""What ``/proc/PID/exe`` ends with once the file was replaced (a package upgrade)."""


def _text(value: str | None, limit: int = 200) -> str | None:
    if value is None:
        return None
    text = escape(value)[: min(limit, WORKLOAD_TEXT_MAX)]
    return text or None


def base_name(path: str | None) -> str:
    """The last component of a path (``/usr/bin/ollama`` -> ``ollama``); "" for None."""
    if not path:
        return ""
    return path.rstrip("/").rsplit("/", 1)[-1]


def real_exe(path: str | None) -> str | None:
    """An executable's path as installed: ``/proc/PID/exe`` without the `` (deleted)``
    of a file replaced while it runs (a package upgrade, Ollama's install.sh)."""
    return None if path is None else path.removesuffix(DELETED)


def workload_target(proc: GpuProcessSample) -> WorkloadTarget:
    """The workload a GPU process belongs to: its container, else its service, else itself.

    A host Docker container is ``container:<id>`` and a host service ``unit:<name>``;
    a workload the host's Docker engine or system manager does not run (another
    runtime's container, a unit of a user's manager, a machine or a container) is its
    cgroup, ``cgroup:<path>``, with no unit: a user's ``ollama.service`` is not the
    host's. A cgroup path that is not plain text leaves the process, ``pid:<pid>``."""
    a = proc.attribution
    if a is None:
        return WorkloadTarget(WorkloadKey.PID, str(proc.pid))
    exe = _text(real_exe(a.exe))
    image = _text(a.container_image)
    container = None
    if a.container_id is not None:
        container = _text(a.container_name) or a.container_id[:12]
    cgroup = a.workload_cgroup()
    if cgroup is not None:
        short = container or _short(a)
        return WorkloadTarget(
            WorkloadKey.CGROUP, cgroup, name=short, container=container, image=image, exe=exe
        )
    if a.container_id is not None and a.cgroup is None:
        return WorkloadTarget(
            WorkloadKey.CONTAINER,
            a.container_id,
            name=container or "",
            container=_text(a.container_name),
            unit=_text(a.unit),
            image=image,
            exe=exe,
        )
    if a.unit is not None and a.unit.endswith(".service"):
        unit = _text(a.unit) or a.unit
        return WorkloadTarget(WorkloadKey.UNIT, unit, name=unit, unit=unit, exe=exe)
    return WorkloadTarget(
        WorkloadKey.PID, str(proc.pid), name=_short(a), unit=_text(a.unit), exe=exe
    )


def _short(a: ProcessAttribution) -> str:
    """The process's short name (its executable's file name, else ``argv[0]``'s)."""
    return (
        _text(base_name(real_exe(a.exe)) or (base_name(a.cmdline[0]) if a.cmdline else None), 64)
        or ""
    )


def describe(proc: GpuProcessSample) -> str:
    """``pid 4242 /tmp/.x/xmrig (user nobody)``: one escaped line for evidence."""
    a = proc.attribution
    if a is None:
        return f"pid {proc.pid} (gone or unreadable)"
    user = f" (user {escape(a.user)})" if a.user else ""
    return escape(a.label()) + user


def command_line(attr: ProcessAttribution | None, limit: int = 200) -> str:
    """The process's command line, escaped and capped, for evidence."""
    if attr is None or not attr.cmdline:
        return ""
    return escape(" ".join(attr.cmdline))[:limit]


def gpu_evidence(sample: GpuSample) -> str:
    """``gpu 0 GPU-8f1c...`` for evidence."""
    return f"gpu {sample.index} {escape(sample.uuid)}"


def top_consumers(sample: GpuSample, n: int = 3) -> tuple[GpuProcessSample, ...]:
    """The ``n`` processes of ``sample`` using the most GPU memory (then SM)."""
    return tuple(
        sorted(
            sample.processes,
            key=lambda p: (p.used_memory_bytes or 0, p.sm_util or 0.0, -p.pid),
            reverse=True,
        )[:n]
    )


def busiest(sample: GpuSample) -> GpuProcessSample | None:
    """The process with the highest SM use (then memory), or None without processes."""
    if not sample.processes:
        return None
    return heaviest(sample.processes)


def heaviest(procs: Sequence[GpuProcessSample]) -> GpuProcessSample:
    """The process of ``procs`` (not empty) with the highest SM use, then memory."""
    return max(procs, key=lambda p: (p.sm_util or 0.0, p.used_memory_bytes or 0))


def consumer_text(proc: GpuProcessSample) -> str:
    """``pid 4242 /usr/bin/ollama: 12.0 GiB, SM 80%`` for evidence."""
    used = proc.used_memory_bytes
    mem = "?" if used is None else f"{used / (1 << 30):.1f} GiB"
    sm = "" if proc.sm_util is None else f", SM {proc.sm_util:.0%}"
    return f"{describe(proc)}: {mem}{sm}"


class ClientBuckets:
    """Requests per client over a trailing window, in ``BUCKET_SECONDS`` buckets.

    At most ``max_keys`` clients per bucket (later ones are counted in ``overflow`` and in
    the bucket's total only), so memory is bounded by ``window / 10 s x max_keys``.
    """

    def __init__(self, window: float, max_keys: int) -> None:
        self.window = window
        self.max_keys = max_keys
        self._buckets: deque[tuple[float, Counter[str], list[int]]] = deque()
        self.overflow = 0

    def add(self, ts: float, client: str) -> None:
        """Count one request of ``client`` at ``ts``."""
        start = ts - ts % BUCKET_SECONDS
        buckets = self._buckets
        if not buckets or buckets[-1][0] < start:
            buckets.append((start, Counter(), [0]))
        bucket = buckets[-1] if buckets[-1][0] <= start else self._find(start)
        counts = bucket[1]
        bucket[2][0] += 1
        if client in counts or len(counts) < self.max_keys:
            counts[client] += 1
        else:
            self.overflow += 1
        self._trim(ts)

    def _find(self, start: float) -> tuple[float, Counter[str], list[int]]:
        for bucket in reversed(self._buckets):
            if bucket[0] <= start:
                return bucket
        return self._buckets[0]

    def _trim(self, now: float) -> None:
        buckets = self._buckets
        while buckets and buckets[0][0] + BUCKET_SECONDS <= now - self.window:
            buckets.popleft()

    def total(self, since: float, until: float) -> int:
        """Requests counted in the buckets that overlap ``[since, until]``."""
        return sum(
            b[2][0] for b in self._buckets if b[0] + BUCKET_SECONDS > since and b[0] <= until
        )

    def per_client(self, since: float, until: float) -> Counter[str]:
        """Requests per client in the buckets that overlap ``[since, until]``."""
        out: Counter[str] = Counter()
        for start, counts, _ in self._buckets:
            if start + BUCKET_SECONDS > since and start <= until:
                out.update(counts)
        return out

    def forget(self, match: Callable[[str], bool]) -> int:
        """Drop every client ``match`` accepts from every bucket (an operator forgave
        it: its requests no longer make it the flooder or the thief); how many entries
        went. The buckets' totals stay: the requests were made (``gpu_theft`` reads the
        authenticated total as the GPU's lawful work)."""
        dropped = 0
        for _, counts, _ in self._buckets:
            for client in [c for c in counts if match(c)]:
                del counts[client]
                dropped += 1
        return dropped

    def expire(self, now: float) -> int:
        """Drop buckets older than the window; how many clients they held."""
        before = len(self)
        self._trim(now)
        return before - len(self)

    def __len__(self) -> int:
        return sum(len(b[1]) for b in self._buckets)
