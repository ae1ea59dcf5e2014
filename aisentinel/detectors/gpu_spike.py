"""``gpu_spike``: a GPU's utilization or memory leaves its usual range (EWMA z-score).

Per GPU and per signal (``utilization``: the GPU's busy ratio; ``memory``: used / total
memory), an exponentially weighted mean and variance (``alpha``) learn the usual
level. After ``warmup`` samples, a sample at least ``z_threshold`` standard deviations
and at least ``min_delta`` (absolute, 0-1) away from the mean starts a spike: one LOW
finding, about the busiest workload on that GPU then (``Finding.target``). Further
samples of the same spike are quiet (the mean keeps learning, so a new steady pattern
becomes the usual level); the spike ends when the z-score falls under half the
threshold, and a new one is reported at most once per ``cooldown``. So a new workload
pattern is flagged once, not every second. State: two signals per GPU (at most
``max_gpus``), a few numbers each.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from aisentinel.detectors.base import REGISTRY, BatchDetector, DetectorConfigBase
from aisentinel.detectors.common import Window
from aisentinel.detectors.gpu_common import (
    MaxGpus,
    Ratio,
    busiest,
    consumer_text,
    gpu_evidence,
    workload_target,
)
from aisentinel.events import Event, Finding, GpuSample, Severity

MIN_STD = 0.01
"""A floor under the learned standard deviation (a flat signal is not infinitely
surprising)."""


class GpuSpikeConfig(DetectorConfigBase):
    """``[detectors.gpu_spike]``."""

    alpha: Annotated[float, Field(ge=0.001, le=0.5, allow_inf_nan=False)] = 0.05
    warmup: Annotated[int, Field(ge=1, le=100_000)] = 60
    z_threshold: Annotated[float, Field(ge=1.0, le=100.0, allow_inf_nan=False)] = 4.0
    min_delta: Ratio = 0.2
    cooldown: Window = 600.0
    max_gpus: MaxGpus = 64


class _Signal:
    __slots__ = ("fired_at", "in_spike", "mean", "n", "var")

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.n = 0
        self.in_spike = False
        self.fired_at = float("-inf")


class GpuSpikeDetector(BatchDetector):
    """See the module docstring."""

    name = "gpu_spike"
    consumes = (GpuSample,)

    def __init__(self, config: GpuSpikeConfig) -> None:
        super().__init__(config)
        self._cfg = config
        self._gpus: dict[int, tuple[_Signal, _Signal]] = {}

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        out: list[tuple[int, Finding]] = []
        for i, event in enumerate(events):
            if type(event) is not GpuSample or event.lost:
                continue
            found = self._sample(event)
            if found is not None:
                out.append((i, found))
        return out

    def _sample(self, sample: GpuSample) -> Finding | None:
        signals = self._gpus.get(sample.index)
        if signals is None:
            if len(self._gpus) >= self._cfg.max_gpus:
                return None
            signals = self._gpus[sample.index] = (_Signal(), _Signal())
        used, total = sample.memory_used_bytes, sample.memory_total_bytes
        found: Finding | None = None
        for name, signal, value in (
            ("utilization", signals[0], sample.utilization_gpu),
            ("memory", signals[1], used / total if used is not None and total else None),
        ):
            if value is None:
                continue
            spike = self._update(signal, value, sample.ts)
            if spike is not None and found is None:
                found = self._finding(sample, name, value, *spike)
        return found

    def _update(self, s: _Signal, x: float, ts: float) -> tuple[float, float] | None:
        """Learn ``x``; ``(mean, z)`` when it starts a spike to report."""
        cfg = self._cfg
        if s.n == 0:
            s.mean, s.n = x, 1
            return None
        delta = x - s.mean
        std = max(math.sqrt(s.var), MIN_STD)
        z = delta / std
        mean = s.mean
        report = False
        if s.n >= cfg.warmup:
            if abs(z) >= cfg.z_threshold and abs(delta) >= cfg.min_delta:
                if not s.in_spike and ts - s.fired_at >= cfg.cooldown:
                    report = True
                    s.fired_at = ts
                s.in_spike = True
            elif abs(z) < cfg.z_threshold / 2:
                s.in_spike = False
        a = cfg.alpha
        s.mean += a * delta
        s.var = (1 - a) * (s.var + a * delta * delta)
        s.n += 1
        return (mean, z) if report else None

    def _finding(
        self, sample: GpuSample, signal: str, value: float, mean: float, z: float
    ) -> Finding:
        proc = busiest(sample)
        target = workload_target(proc) if proc is not None else None
        evidence = [
            gpu_evidence(sample),
            f"{signal} {value:.0%}, usual {mean:.0%}, z {z:+.1f}",
            f"window {sample.ts:.0f}",
        ]
        if proc is not None:
            evidence.append(f"busiest {consumer_text(proc)}")
        return Finding(
            ts=sample.ts,
            detector=self.name,
            severity=Severity.LOW,
            client=None,
            key=target.text if target is not None else f"gpu:{sample.index}",
            count=1,
            window=0.0,
            message=(
                f"GPU {sample.index} {signal} jumped to {value:.0%} (usual {mean:.0%}, z {z:+.1f})"
            ),
            evidence=tuple(evidence),
            target=target,
        )

    def expire(self, now: float) -> int:
        return 0

    def tracked_keys(self) -> int:
        return len(self._gpus)


REGISTRY.register("gpu_spike", GpuSpikeConfig, GpuSpikeDetector)
