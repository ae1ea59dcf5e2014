"""``prompt_injection``: prompt injection, jailbreaks and system-prompt extraction in
request bodies, scored by :func:`aisentinel.guard.scan`.

Consumes :class:`~aisentinel.events.HttpRequest` with a body on the AI API paths (see
:mod:`~.prompts`). Each prompt that scores at least ``threshold`` (default: the shipped
model's) is one finding of ``severity`` (default MEDIUM: below the default
``[decisions] ban_severity``, so an alert, not a ban) with the score, the category and
the evidence span (normalised, escaped, at most 160 characters; for a prompt holding
secrets it is taken from the prompt with the secrets redacted, so it cannot quote one).

Abuse: prompts scoring at least ``abuse_score`` (high confidence) are counted per
client and per API key (``key_id``); ``abuse_threshold`` of them within
``abuse_window`` make one finding of ``abuse_severity`` (default HIGH: a ban under the
default policy) about the client, or about the key (``client=None``: an alert naming
the last address). That finding takes the place of the single-prompt one for the
request that crossed; when the client and its key cross on the same request, the
client's is reported (its evidence names the key).

Each distinct prompt text is scored once: verdicts are remembered by a digest of the
text (``cache_size`` entries), so a retried or replayed body costs a hash.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Annotated

from pydantic import Field

from aisentinel.configtypes import format_duration
from aisentinel.decisions.config import SeverityName
from aisentinel.detectors.base import REGISTRY, BatchDetector
from aisentinel.detectors.common import Threshold, Window, client_key
from aisentinel.detectors.prompts import MEMO, PromptDetectorConfig, PromptRequests
from aisentinel.detectors.window import EventWindows
from aisentinel.events import Event, Finding, HttpRequest, Severity
from aisentinel.guard import scan

Score = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]
"""A scanner score, 0-1."""
CacheSize = Annotated[int, Field(ge=0, le=1_000_000)]
"""Remembered verdicts, 0-1000000 (0: none)."""

_MAX_PATH = 200


class PromptInjectionConfig(PromptDetectorConfig):
    """``[detectors.prompt_injection]``."""

    threshold: Score | None = None
    """Score from which a prompt is an attack; unset: the shipped model's threshold."""
    severity: SeverityName = Severity.MEDIUM
    """Severity of a single-prompt finding (MEDIUM: an alert under the default policy)."""
    abuse_score: Score = 0.9
    """Score from which a prompt counts towards abuse (high confidence)."""
    abuse_threshold: Threshold = 5
    """High-confidence attacks within ``abuse_window`` from one client or key: abuse."""
    abuse_window: Window = 600.0
    abuse_severity: SeverityName = Severity.HIGH
    """Severity of an abuse finding (HIGH: a ban under the default policy)."""
    cache_size: CacheSize = 4096


class _Verdict:
    """What a finding needs of a :class:`~aisentinel.guard.Verdict`."""

    __slots__ = ("category", "evidence", "score")

    def __init__(self, score: float, category: str, evidence: str) -> None:
        self.score = score
        self.category = category
        self.evidence = evidence


class PromptInjectionDetector(BatchDetector):
    """One alert per attack prompt; abuse findings per client and per API key."""

    name = "prompt_injection"
    consumes = (HttpRequest,)

    def __init__(self, config: PromptInjectionConfig) -> None:
        super().__init__(config)
        self._cfg = config
        self._threshold = config.threshold
        """The model's own threshold unless configured; the shipped model (~8 MB in
        memory) is loaded by the first prompt scored, not when no prompt ever comes."""
        self._requests = PromptRequests(config.paths)
        self._clients = EventWindows(config.abuse_threshold, config.abuse_window, config.max_keys)
        self._keys = EventWindows(config.abuse_threshold, config.abuse_window, config.max_keys)
        self._cache: OrderedDict[bytes, _Verdict | None] = OrderedDict()
        self.scored = 0
        """Prompts scored (not answered from the cache)."""

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        picked = self._requests.pick(events)
        if not picked:
            return []
        out: list[tuple[int, Finding]] = []
        for i, event, body in picked:
            facts = MEMO.get(events, i, body, self._cfg)
            if not facts.text:
                continue
            verdict = self._verdict(facts.text, facts.redacted)
            if verdict is not None:
                out.append((i, self._finding(event, verdict)))
        return out

    def _verdict(self, text: str, redacted: str) -> _Verdict | None:
        """The verdict on ``text`` when it is an attack, else ``None``; scored once.

        When ``text`` holds secrets (``redacted`` differs), an attack's category and
        evidence come from scoring ``redacted``, so that the evidence cannot quote a
        secret; the score is the one of the prompt as sent (the redaction marks would
        move it).
        """
        cache = self._cache
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        if digest in cache:
            cache.move_to_end(digest)
            return cache[digest]
        self.scored += 1
        v = scan(text, threshold=self._threshold)  # None: the model's own threshold
        verdict: _Verdict | None = None
        if v.is_attack:
            category, evidence = v.category, v.evidence
            if redacted is not text:
                clean = scan(redacted, threshold=0.0)
                category, evidence = clean.category, clean.evidence
            verdict = _Verdict(v.score, category, evidence)
        if self._cfg.cache_size:
            cache[digest] = verdict
            if len(cache) > self._cfg.cache_size:
                cache.popitem(last=False)
        return verdict

    def _finding(self, event: HttpRequest, verdict: _Verdict) -> Finding:
        cfg = self._cfg
        summary = f"{verdict.category} score {verdict.score:.3f}"
        key_id = event.key_id
        if verdict.score >= cfg.abuse_score:
            abuse = self._count_abuse(event, f"{summary}: {verdict.evidence}")
            if abuse is not None:
                return abuse
        evidence: tuple[str, ...] = (
            summary,
            verdict.evidence,
            f"{event.method} {event.path[:_MAX_PATH]}",
        )
        if key_id is not None:
            evidence = (*evidence, f"key_id {key_id}")
        return Finding(
            ts=event.ts,
            detector=self.name,
            severity=cfg.severity,
            client=event.client,
            key=event.client,
            count=1,
            window=0.0,
            message=f"prompt {verdict.category} attack, score {verdict.score:.2f}",
            evidence=evidence,
            source=event.source,
            # The same attack (category and evidence span) again is a repeat; another
            # prompt is news (an audit of what was tried), however many come.
            topic=f"{verdict.category}\x1f{verdict.evidence}",
        )

    def _count_abuse(self, event: HttpRequest, sample: str) -> Finding | None:
        """Count a high-confidence attack for the client and the key; the abuse finding
        when one of them crosses (the client's when both do)."""
        cfg = self._cfg
        key_id = event.key_id
        clients: tuple[str, ...] = ()
        client: str | None = event.client
        grouped = client_key(event.client)
        crossing = self._clients.hit(grouped, event.ts, sample)
        key_crossing = None if key_id is None else self._keys.hit(key_id, event.ts, sample)
        if crossing is not None:
            who = "from one client" if grouped == client else f"from {grouped}"
            key = grouped
            evidence = crossing.evidence
            if key_id is not None:
                evidence = (*evidence, f"key_id {key_id}")
        elif key_crossing is not None and key_id is not None:
            crossing = key_crossing
            who, key = f"with API key {key_id}", f"key_id:{key_id}"
            client, clients = None, (event.client,)
            evidence = crossing.evidence
        else:
            return None
        span = format_duration(float(max(round(event.ts - crossing.first_ts), 0)))
        message = (
            f"{crossing.events} high-confidence prompt attacks {who} in {span} (threshold "
            f"{cfg.abuse_threshold} in {format_duration(cfg.abuse_window)}, score >= "
            f"{cfg.abuse_score:g})"
        )
        return Finding(
            ts=event.ts,
            detector=self.name,
            severity=cfg.abuse_severity,
            client=client,
            key=key,
            count=crossing.events,
            window=cfg.abuse_window,
            message=message,
            evidence=evidence,
            clients=clients,
            source=event.source,
        )

    def expire(self, now: float) -> int:
        return self._clients.expire(now) + self._keys.expire(now)

    def tracked_keys(self) -> int:
        return len(self._clients) + len(self._keys)


REGISTRY.register("prompt_injection", PromptInjectionConfig, PromptInjectionDetector)
