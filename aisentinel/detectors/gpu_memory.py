"""``gpu_memory``: GPU memory exhaustion (a denial of service), with its top consumers.

Per GPU, from its samples:

* **sustained**: used memory at or above ``used_threshold`` of the total for ``window``
  (every sample in between);
* **climb**: used memory rising by ``climb_ratio`` of the total or more within
  ``climb_window``, when it ends at ``used_threshold`` or above (an early warning of
  exhaustion) or a request flood explains it. A climb alone that stops short of the
  threshold is a model being loaded (vLLM preallocating 90% at start, Ollama loading a
  model again after ``OLLAMA_KEEP_ALIVE``), not a finding.

Either gives a finding about the top memory consumer (``Finding.target``: its
container, service or process; the top three in the evidence) with the GPU index,
UUID and evidence window: MEDIUM, or HIGH when a request flood from one client
explains it. The flood: the client with the most inference requests (``ai_paths``)
that reached the model in the same window sent at least ``flood_threshold`` of them
and at least ``flood_share`` of all; it gets a HIGH finding of its own (decisions ban
it), named in the workload's finding. A request reached the model unless nginx or the
server turned it away: 4xx other than 499 (client closed while generating), and 502 or
503 (upstream down: a client retrying while vLLM restarts sends hundreds of them) do
not count. Each condition is reported once per episode (until memory
falls back under the threshold, or for a climb, once per ``climb_window``). State: one
entry per GPU (at most ``max_gpus``; a few hundred samples each) and per-client
counts in 10-second buckets (at most ``max_keys`` clients per bucket).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Annotated, Final, cast

from pydantic import Field, field_validator

from aisentinel.configtypes import format_duration
from aisentinel.detectors.base import REGISTRY, BatchDetector, DetectorConfigBase
from aisentinel.detectors.common import MaxKeys, Window, all_requests
from aisentinel.detectors.gpu_common import (
    DEFAULT_AI_PATHS,
    ClientBuckets,
    MaxGpus,
    Ratio,
    consumer_text,
    gpu_evidence,
    top_consumers,
    workload_target,
)
from aisentinel.detectors.paths import PathSignatures
from aisentinel.detectors.shared import SharedState
from aisentinel.events import Event, Finding, GpuSample, HttpRequest, Severity

MAX_HISTORY: Final = 4096
"""Most samples per GPU kept for the climb test."""

TURNED_AWAY: Final = frozenset(range(400, 499)) | (frozenset(range(501, 600)) - {504})
"""Statuses of requests that did not reach the model (see the module docstring): 4xx but
499, and 5xx but 500 (the model failed, e.g. CUDA out of memory) and 504 (it was still
generating when nginx gave up)."""


class GpuMemoryConfig(DetectorConfigBase):
    """``[detectors.gpu_memory]``."""

    max_keys: MaxKeys = 10_000
    used_threshold: Ratio = 0.95
    window: Window = 120.0
    climb_ratio: Ratio = 0.5
    climb_window: Window = 30.0
    flood_threshold: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    flood_share: Ratio = 0.5
    ai_paths: tuple[str, ...] = DEFAULT_AI_PATHS
    max_gpus: MaxGpus = 64

    @field_validator("ai_paths")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        PathSignatures(patterns)
        return patterns


class _Gpu:
    __slots__ = ("climb_at", "high_since", "history", "reported")

    def __init__(self) -> None:
        self.high_since: float | None = None
        self.reported = False
        self.climb_at = float("-inf")
        self.history: deque[tuple[float, float]] = deque(maxlen=MAX_HISTORY)


class GpuMemoryDetector(BatchDetector):
    """See the module docstring."""

    name = "gpu_memory"
    consumes = (GpuSample, HttpRequest)
    wants_shared = True

    def __init__(self, config: GpuMemoryConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._match = PathSignatures(config.ai_paths).match
        self._clients = ClientBuckets(max(config.window, config.climb_window), config.max_keys)
        self._gpus: dict[int, _Gpu] = {}
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._requests = shared.requests
        self._bit = self._requests.register(self._match)

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        if all_requests(events):  # an access log's batch: no GPU sample (cached per batch)
            if self._gpus:  # requests only matter next to a GPU: none seen, nothing kept
                self._requests_of(events)
            return []
        gpu_at = [i for i, e in enumerate(events) if type(e) is GpuSample]
        if len(gpu_at) < len(events):
            self._requests_of(events)
        out: list[tuple[int, Finding]] = []
        for i in gpu_at:
            out.extend((i, f) for f in self._sample(cast("GpuSample", events[i])))
        return out

    def _requests_of(self, events: Sequence[Event]) -> None:
        masks = self._requests.facts(events, self).masks
        bit = self._bit
        reqs = cast("Sequence[HttpRequest]", events)
        add = self._clients.add
        away = TURNED_AWAY
        for i in [i for i, mask in enumerate(masks) if mask & bit]:
            if reqs[i].status not in away:
                add(reqs[i].ts, reqs[i].client)

    def _sample(self, sample: GpuSample) -> list[Finding]:
        used, total = sample.memory_used_bytes, sample.memory_total_bytes
        state = self._gpus.get(sample.index)
        if state is None:
            if len(self._gpus) >= self._cfg.max_gpus:
                return []
            state = self._gpus[sample.index] = _Gpu()
        if sample.lost or used is None or not total:
            state.high_since = None
            state.reported = False
            return []
        cfg = self._cfg
        ts = sample.ts
        ratio = used / total
        history = state.history
        history.append((ts, ratio))
        while history and history[0][0] < ts - cfg.climb_window:
            history.popleft()
        out: list[Finding] = []
        low = min(r for _, r in history)
        if ratio - low >= cfg.climb_ratio and ts - state.climb_at >= cfg.climb_window:
            start = next(t for t, r in history if r == low)
            how = f"rose from {low:.0%} to {ratio:.0%}"
            out += self._finding(sample, start, ratio, how, flood_only=ratio < cfg.used_threshold)
            if out:
                state.climb_at = ts
        if ratio < cfg.used_threshold:
            state.high_since = None
            state.reported = False
            return out
        if state.high_since is None:
            state.high_since = ts
        if not state.reported and ts - state.high_since >= cfg.window:
            state.reported = True
            span = format_duration(float(round(ts - state.high_since)))
            out += self._finding(
                sample,
                state.high_since,
                ratio,
                f"at {ratio:.0%} for {span} (threshold {cfg.used_threshold:.0%})",
            )
        return out

    def _finding(
        self, sample: GpuSample, since: float, ratio: float, how: str, *, flood_only: bool = False
    ) -> list[Finding]:
        """The finding about the top consumer, and one about the flooding client if any;
        none when ``flood_only`` and no flood explains it."""
        cfg = self._cfg
        ts = sample.ts
        top = top_consumers(sample)
        clients = self._clients.per_client(since - cfg.climb_window, ts)
        total = sum(clients.values())
        flood: tuple[str, int] | None = None
        if clients:
            client, n = clients.most_common(1)[0]
            if n >= cfg.flood_threshold and n >= cfg.flood_share * total:
                flood = (client, n)
        if flood_only and flood is None:
            return []
        evidence = [
            gpu_evidence(sample),
            f"memory used {sample.memory_used_bytes} of {sample.memory_total_bytes} bytes",
            f"window {since:.0f}-{ts:.0f}",
            *(f"consumer {consumer_text(p)}" for p in top),
        ]
        message = f"GPU {sample.index} memory {how}"
        if top:
            message += f"; top consumer {consumer_text(top[0])}"
        if flood is not None:
            message += f"; request flood from {flood[0]} ({flood[1]} of {total} requests)"
            evidence.append(f"flood {flood[0]}: {flood[1]} of {total} inference requests")
        target = workload_target(top[0]) if top else None
        out = [
            Finding(
                ts=ts,
                detector=self.name,
                severity=Severity.HIGH if flood is not None else Severity.MEDIUM,
                client=None,
                key=target.text if target is not None else f"gpu:{sample.index}",
                count=len(sample.processes),
                window=ts - since,
                message=message,
                evidence=tuple(evidence),
                clients=(flood[0],) if flood is not None else (),
                target=target,
            )
        ]
        if flood is not None:
            out.append(
                Finding(
                    ts=ts,
                    detector=self.name,
                    severity=Severity.HIGH,
                    client=flood[0],
                    key=flood[0],
                    count=flood[1],
                    window=ts - since,
                    message=(
                        f"{flood[1]} inference requests while GPU {sample.index} memory {how}"
                        " (memory exhaustion)"
                    ),
                    evidence=tuple(evidence),
                )
            )
        return out

    def expire(self, now: float) -> int:
        return self._clients.expire(now)

    def tracked_keys(self) -> int:
        return len(self._gpus) + len(self._clients)

    def window_counts(self) -> tuple[int, int]:
        return 0, self._clients.overflow


REGISTRY.register("gpu_memory", GpuMemoryConfig, GpuMemoryDetector)
