"""``gpu_theft``: a GPU kept busy without the authenticated API traffic that explains it.

The detector consumes GPU samples and HTTP requests. A GPU whose utilization stays at
or above ``busy_threshold`` for ``window`` (every sample in between) is looked at
against the inference requests (2xx on ``ai_paths``) of that window:

* at least ``min_unauthenticated`` of them, and at least ``unauthenticated_share`` of
  all, came from clients that are not authenticated (neither the request carried a
  user or API key where something checks it, see :class:`~.shared.CredentialTrust`,
  nor its client authenticated within ``authenticated_ttl``: the
  pipeline's shared set, :mod:`~aisentinel.detectors.shared`): inference traffic from
  unauthenticated clients keeps the GPU busy. One HIGH finding per such client (the
  top ``top_clients`` by requests, each with at least ``min_client_requests``):
  decisions ban them. Plus a MEDIUM finding about the workload serving them;
* else, when at most ``max_authenticated`` authenticated requests came (near zero):
  someone uses the GPU outside the API. A HIGH finding about the busiest workload on
  that GPU (``Finding.target``: its container, service or process), for the workload
  policy (alert unless configured). The workloads the operator declared in
  ``[detectors.gpu_workload]`` (its ``extra_*`` entries: a batch training job; not the
  built-in AI services, whose GPU time their API should explain) are expected to use
  the GPU without API traffic: when every process using the GPU at the window's end
  (SM use above 0, or not known) is one of them, the finding is LOW (recorded, not
  paged); else it is HIGH about the busiest process that is not;
* else the authenticated traffic explains the busy GPU: nothing.

A busy stretch is reported once per ``window``; a client at most once per ``window``
whichever GPUs are busy (the requests do not say which GPU served them). Each finding
carries the GPU index, UUID, the busiest process's attribution and the evidence window.
State: one entry per GPU (at most ``max_gpus``) and per-client request counts in
10-second buckets (at most ``max_keys`` clients per bucket).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated, cast

from pydantic import Field, field_validator

from aisentinel.configtypes import format_duration
from aisentinel.detectors.base import REGISTRY, BatchDetector, DetectorConfigBase, Forgiven
from aisentinel.detectors.common import MaxKeys, Window, all_requests
from aisentinel.detectors.gpu_common import (
    DEFAULT_AI_PATHS,
    ClientBuckets,
    MaxGpus,
    Ratio,
    busiest,
    consumer_text,
    describe,
    gpu_evidence,
    heaviest,
    workload_target,
)
from aisentinel.detectors.paths import PathSignatures
from aisentinel.detectors.shared import SharedState
from aisentinel.events import (
    Event,
    Finding,
    GpuProcessSample,
    GpuSample,
    HttpRequest,
    Severity,
)

Requests = Annotated[int, Field(ge=0, le=1_000_000)]


class GpuTheftConfig(DetectorConfigBase):
    """``[detectors.gpu_theft]``."""

    max_keys: MaxKeys = 10_000
    busy_threshold: Ratio = 0.5
    window: Window = 300.0
    max_authenticated: Requests = 2
    """Authenticated inference requests in the window that still count as "near zero"."""
    min_unauthenticated: Requests = 20
    unauthenticated_share: Ratio = 0.5
    min_client_requests: Requests = 5
    top_clients: Annotated[int, Field(ge=1, le=100)] = 5
    ai_paths: tuple[str, ...] = DEFAULT_AI_PATHS
    authenticated_ttl: Window = 86_400.0
    max_gpus: MaxGpus = 64

    @field_validator("ai_paths")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        PathSignatures(patterns)
        return patterns


class _Busy:
    __slots__ = ("since",)

    def __init__(self) -> None:
        self.since: float | None = None


class GpuTheftDetector(BatchDetector):
    """See the module docstring."""

    name = "gpu_theft"
    consumes = (GpuSample, HttpRequest)
    wants_shared = True

    def __init__(self, config: GpuTheftConfig, *, shared: SharedState | None = None) -> None:
        super().__init__(config)
        self._cfg = config
        self._match = PathSignatures(config.ai_paths).match
        self._authed = ClientBuckets(config.window, 1)
        self._unauthed = ClientBuckets(config.window, config.max_keys)
        self._gpus: dict[int, _Busy] = {}
        self._reported: OrderedDict[str, float] = OrderedDict()  # client -> when
        self.share(shared or SharedState())

    def share(self, shared: SharedState) -> None:
        self._shared = shared
        self._requests = shared.requests
        self._bit = self._requests.register(
            self._match,
            ttl=self._cfg.authenticated_ttl,
            max_keys=self._cfg.max_keys,
            dormant=not self._gpus,  # requests only matter next to a GPU
        )

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        if all_requests(events):  # an access log's batch: no GPU sample (cached per batch)
            if self._gpus:  # requests only matter next to a GPU: none seen, nothing kept
                self._requests_of(events)
            return []
        out: list[tuple[int, Finding]] = []
        gpu_at = [i for i, e in enumerate(events) if type(e) is GpuSample]
        if len(gpu_at) < len(events):
            self._requests_of(events)
        for i in gpu_at:
            out.extend((i, f) for f in self._sample(cast("GpuSample", events[i])))
        return out

    def _requests_of(self, events: Sequence[Event]) -> None:
        facts = self._requests.facts(events, self)
        # Credentials seen in the log only: "made a successful inference call" (the inferred
        # kind) is exactly what an unauthenticated GPU thief does.
        marks = facts.marks
        bit = self._bit
        ttl = self._cfg.authenticated_ttl
        reqs = cast("Sequence[HttpRequest]", events)
        for i in [i for i, mask in enumerate(facts.masks) if mask & bit]:
            r = reqs[i]
            if not 200 <= r.status < 300:
                continue
            seen = marks.get(i)
            if seen is not None and r.ts - seen <= ttl:
                self._authed.add(r.ts, "")
            else:
                self._unauthed.add(r.ts, r.client)

    def _sample(self, sample: GpuSample) -> list[Finding]:
        util = sample.utilization_gpu
        state = self._gpus.get(sample.index)
        if state is None:
            if len(self._gpus) >= self._cfg.max_gpus:
                return []
            if not self._gpus:
                self._requests.wake(self._bit)
            state = self._gpus[sample.index] = _Busy()
        if sample.lost or util is None or util < self._cfg.busy_threshold:
            state.since = None
            return []
        ts = sample.ts
        if state.since is None:
            state.since = ts
            return []
        if ts - state.since < self._cfg.window:
            return []
        since = state.since
        state.since = ts  # reported once per window of busy time
        cfg = self._cfg
        authed = self._authed.total(since, ts)
        clients = self._unauthed.per_client(since, ts)
        unauthed = sum(clients.values())
        if unauthed >= cfg.min_unauthenticated and unauthed >= cfg.unauthenticated_share * (
            authed + unauthed
        ):
            return self._unauthenticated(sample, since, authed, clients.most_common())
        if authed <= cfg.max_authenticated:
            return [self._outside_api(sample, since, authed, unauthed)]
        return []

    def _base(self, sample: GpuSample, since: float, authed: int, unauthed: int) -> list[str]:
        util = sample.utilization_gpu or 0.0
        proc = busiest(sample)
        evidence = [
            gpu_evidence(sample),
            f"utilization {util:.0%} (>= {self._cfg.busy_threshold:.0%} since {since:.0f})",
            f"window {since:.0f}-{sample.ts:.0f}",
            f"inference requests: {authed} authenticated, {unauthed} unauthenticated",
        ]
        if proc is not None:
            evidence.append(f"busiest {consumer_text(proc)}")
        return evidence

    def _outside_api(self, sample: GpuSample, since: float, authed: int, unauthed: int) -> Finding:
        proc, declared = self._user_of(sample)
        span = format_duration(float(round(sample.ts - since)))
        who = describe(proc) if proc is not None else "no process listed"
        target = workload_target(proc) if proc is not None else None
        evidence = self._base(sample, since, authed, unauthed)
        message = (
            f"GPU {sample.index} busy for {span} with {authed} authenticated inference "
            f"requests: GPU time used outside the API by {who}"
        )
        if declared is not None:
            message += f", a workload declared in [detectors.gpu_workload] ({declared})"
            evidence.append(f"declared by {declared}: expected to use the GPU outside the API")
        return Finding(
            ts=sample.ts,
            detector=self.name,
            severity=Severity.HIGH if declared is None else Severity.LOW,
            client=None,
            key=target.text if target is not None else f"gpu:{sample.index}",
            count=authed + unauthed,
            window=sample.ts - since,
            message=message,
            evidence=tuple(evidence),
            target=target,
            topic="outside the API",
        )

    def _user_of(self, sample: GpuSample) -> tuple[GpuProcessSample | None, str | None]:
        """``(process, None)``: the busiest process using the GPU that no operator's
        entry of ``gpu_workload`` declares (the busiest listed when none uses it); or
        ``(busiest, what declares it)`` when every process using the GPU is declared."""
        declared_by = self._shared.gpu_expected
        procs = sample.processes
        if declared_by is None or not procs:
            return busiest(sample), None
        using = [p for p in procs if p.sm_util is None or p.sm_util > 0] or procs
        judged = [
            (p, None if p.attribution is None or p.count > 1 else declared_by(p.attribution))
            for p in using
        ]
        rest = [p for p, why in judged if why is None]
        if rest:
            return heaviest(rest), None
        top = heaviest(using)
        return top, next(why for p, why in judged if p is top)

    def _unauthenticated(
        self,
        sample: GpuSample,
        since: float,
        authed: int,
        ranked: list[tuple[str, int]],
    ) -> list[Finding]:
        cfg = self._cfg
        unauthed = sum(n for _, n in ranked)
        span = format_duration(float(round(sample.ts - since)))
        evidence = tuple(self._base(sample, since, authed, unauthed))
        out: list[Finding] = []
        proc = busiest(sample)
        if proc is not None:
            target = workload_target(proc)
            out.append(
                Finding(
                    ts=sample.ts,
                    detector=self.name,
                    severity=Severity.MEDIUM,
                    client=None,
                    key=target.text,
                    count=unauthed,
                    window=sample.ts - since,
                    message=(
                        f"GPU {sample.index} busy for {span} ({describe(proc)}) while "
                        f"{unauthed} inference requests came from unauthenticated clients"
                    ),
                    evidence=evidence,
                    clients=tuple(c for c, _ in ranked[: cfg.top_clients]),
                    target=target,
                    topic="unauthenticated clients",
                )
            )
        reported = self._reported
        for client, n in ranked[: cfg.top_clients]:
            if n < cfg.min_client_requests:
                break
            last = reported.get(client)
            if last is not None and sample.ts - last < cfg.window:
                continue
            reported[client] = sample.ts
            reported.move_to_end(client)
            while len(reported) > cfg.max_keys:
                reported.popitem(last=False)
            out.append(
                Finding(
                    ts=sample.ts,
                    detector=self.name,
                    severity=Severity.HIGH,
                    client=client,
                    key=client,
                    count=n,
                    window=sample.ts - since,
                    message=(
                        f"{n} unauthenticated inference requests in {span} kept GPU "
                        f"{sample.index} busy (GPU-time theft)"
                    ),
                    evidence=evidence,
                )
            )
        return out

    def expire(self, now: float) -> int:
        old = [c for c, ts in self._reported.items() if now - ts >= self._cfg.window]
        for client in old:
            del self._reported[client]
        return (
            len(old)
            + self._authed.expire(now)
            + self._unauthed.expire(now)
            + self._requests.expire(now)
        )

    def forget(self, forgiven: Forgiven) -> None:
        """The request counts (the default) and the clients reported: a forgiven client
        that goes on is reported on its new requests, not kept quiet by its old report."""
        super().forget(forgiven)
        for client in [c for c in self._reported if forgiven(c)]:
            del self._reported[client]

    def tracked_keys(self) -> int:
        return len(self._gpus) + len(self._unauthed) + len(self._reported)

    def window_counts(self) -> tuple[int, int]:
        return 0, self._unauthed.overflow


REGISTRY.register("gpu_theft", GpuTheftConfig, GpuTheftDetector)
