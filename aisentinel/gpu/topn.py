"""Bounded cardinality: keep the top N processes of a GPU, sum the rest into one entry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from aisentinel.events import GpuProcessSample

OTHER_KIND = "other"


def _sum(values: list[int | None] | list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def bound_processes(
    procs: Sequence[GpuProcessSample],
    top_n: int,
    by: Literal["memory", "sm"] = "memory",
) -> tuple[GpuProcessSample, ...]:
    """The ``top_n`` processes of one GPU by memory (or SM use), then one summed entry.

    The summed entry has pid 0, kind ``other``, ``count`` = how many processes it
    stands for, and the sums of their memory and utilization (None where none of them
    reported a value). With ``top_n`` or fewer processes the input comes back ranked.
    """
    key: Callable[[GpuProcessSample], tuple[float, float, int]]
    if by == "memory":
        key = lambda p: (p.used_memory_bytes or 0, p.sm_util or 0.0, -p.pid)  # noqa: E731
    else:
        key = lambda p: (p.sm_util or 0.0, p.used_memory_bytes or 0, -p.pid)  # noqa: E731
    ranked = sorted(procs, key=key, reverse=True)
    top_n = max(top_n, 0)
    if len(ranked) <= top_n:
        return tuple(ranked)
    kept, rest = ranked[:top_n], ranked[top_n:]
    used = _sum([p.used_memory_bytes for p in rest])
    other = GpuProcessSample(
        gpu_index=rest[0].gpu_index,
        gpu_uuid=rest[0].gpu_uuid,
        pid=0,
        kind=OTHER_KIND,
        used_memory_bytes=None if used is None else int(used),
        sm_util=_sum([p.sm_util for p in rest]),
        memory_util=_sum([p.memory_util for p in rest]),
        attribution=None,
        count=sum(p.count for p in rest),
    )
    return (*kept, other)
