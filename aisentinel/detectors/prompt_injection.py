"""``prompt_injection``: prompt injection, jailbreaks and system-prompt extraction in
request bodies, scored by :func:`aisentinel.guard.scan`.

Consumes :class:`~aisentinel.events.HttpRequest` with a body on the AI API paths (see
:mod:`~.prompts`). Each prompt that scores at least ``threshold`` (default: the shipped
model's) is one finding of ``severity`` (default MEDIUM: below the default
``[decisions] ban_severity``, so an alert, not a ban) with the score, the category and
the evidence span (normalised, escaped, at most 160 characters; for a prompt holding
secrets it is taken from the prompt with the secrets redacted, so it cannot quote one).

Abuse: prompts scoring at least ``abuse_score`` (high confidence) are counted per
client and per API key (``key_id``, unless many keys share it), each distinct prompt text once per
``abuse_window`` (an SDK's retry of the same body is not a new attempt), and only when
the client's own words score that high: text inside tool or function results and
fenced code blocks is data the model is shown (a coding agent reading a test file full
of attack strings), so a prompt that scores only through it is an alert, never abuse.
``abuse_threshold`` of them within
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
from aisentinel.detectors.common import Threshold, Window, client_key, key_identity
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

    __slots__ = ("category", "evidence", "own_score", "score")

    def __init__(self, score: float, category: str, evidence: str, own_score: float) -> None:
        self.score = score
        self.category = category
        self.evidence = evidence
        self.own_score = own_score
        """The score of the client's own words (quoted data left out): what abuse counts."""


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
        self._counted: OrderedDict[tuple[str, bytes], float] = OrderedDict()
        """(client or key, prompt digest) -> when it was last counted towards abuse."""
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
            own = facts.text if facts.own is None else facts.own
            key = facts.text if own is facts.text else f"{facts.text}\x00{own}"
            digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
            verdict = self._verdict(digest, facts.text, own)
            if verdict is not None:
                out.append((i, self._finding(event, verdict, digest)))
        return out

    def _verdict(self, digest: bytes, text: str, own: str) -> _Verdict | None:
        """The verdict on ``text`` when it is an attack, else ``None``; scored once per
        ``digest``. The evidence cannot quote a secret (``scan`` redacts them); ``own``
        (the text without quoted data) is scored too when ``text`` reaches
        ``abuse_score`` and differs."""
        cache = self._cache
        if digest in cache:
            cache.move_to_end(digest)
            return cache[digest]
        self.scored += 1
        v = scan(text, threshold=self._threshold)  # None: the model's own threshold
        verdict: _Verdict | None = None
        if v.is_attack:
            own_score = v.score
            if own is not text and v.score >= self._cfg.abuse_score:
                own_score = scan(own).score if own.strip() else 0.0
            verdict = _Verdict(v.score, v.category, v.evidence, own_score)
        if self._cfg.cache_size:
            cache[digest] = verdict
            if len(cache) > self._cfg.cache_size:
                cache.popitem(last=False)
        return verdict

    def _finding(self, event: HttpRequest, verdict: _Verdict, digest: bytes) -> Finding:
        cfg = self._cfg
        summary = f"{verdict.category} score {verdict.score:.3f}"
        key_id = key_identity(event.key_id)
        if verdict.own_score >= cfg.abuse_score:
            abuse = self._count_abuse(event, f"{summary}: {verdict.evidence}", digest)
            if abuse is not None:
                return abuse
        evidence: tuple[str, ...] = (
            summary,
            verdict.evidence,
            f"{event.method} {event.path[:_MAX_PATH]}",
        )
        if verdict.score >= cfg.abuse_score > verdict.own_score:
            evidence = (
                *evidence,
                f"quoted data (tool result or code block) scores {verdict.score:.3f}, the "
                f"client's own text {verdict.own_score:.3f}: not counted as abuse",
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

    def _first_time(self, who: str, digest: bytes, ts: float) -> bool:
        """Whether ``who`` sent this prompt text for the first time within ``abuse_window``
        (the table is capped at ``max_keys``, oldest first out)."""
        seen = self._counted
        held = (who, digest)
        last = seen.get(held)
        if last is not None and ts - last < self._cfg.abuse_window:
            return False
        seen[held] = ts
        seen.move_to_end(held)
        if len(seen) > self._cfg.max_keys:
            seen.popitem(last=False)
        return True

    def _count_abuse(self, event: HttpRequest, sample: str, digest: bytes) -> Finding | None:
        """Count a high-confidence attack for the client and the key, each distinct prompt
        text once per window; the abuse finding when one of them crosses (the client's
        when both do)."""
        cfg = self._cfg
        key_id = key_identity(event.key_id)
        clients: tuple[str, ...] = ()
        client: str | None = event.client
        grouped = client_key(event.client)
        crossing = (
            self._clients.hit(grouped, event.ts, sample)
            if self._first_time(grouped, digest, event.ts)
            else None
        )
        key_crossing = (
            None
            if key_id is None or not self._first_time(f"key_id:{key_id}", digest, event.ts)
            else self._keys.hit(key_id, event.ts, sample)
        )
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
        seen, horizon, dropped = self._counted, now - self._cfg.abuse_window, 0
        while seen and next(iter(seen.values())) <= horizon:
            seen.popitem(last=False)
            dropped += 1
        return self._clients.expire(now) + self._keys.expire(now) + dropped

    def tracked_keys(self) -> int:
        return len(self._clients) + len(self._keys)


REGISTRY.register("prompt_injection", PromptInjectionConfig, PromptInjectionDetector)
