"""``scan`` and ``sanitize_prompt``: the library entry points.

A verdict is computed on the normalised prompt (see :mod:`aisentinel.guard.normalize`),
on the prompt with its hidden Unicode tag text decoded in place, and on every plausible
base64/hex blob inside it, decoded; the highest score wins. A list
of messages is scanned as one text (joined by newlines), so an instruction split across
messages is seen whole.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from aisentinel.guard.features import Features, extract
from aisentinel.guard.model import GuardModel, default_model
from aisentinel.guard.normalize import decoded_blobs, escape_snippet, normalize, tag_view
from aisentinel.guard.rules import match_rules
from aisentinel.guard.secrets import find_secrets, redact_secrets

__all__ = [
    "GUIDE_PATTERN",
    "MAX_SCAN_CHARS",
    "Finding",
    "SanitizeResult",
    "Verdict",
    "sanitize_prompt",
    "scan",
]

#: Prompts longer than this are scanned as their first 48 KiB and last 16 KiB.
MAX_SCAN_CHARS = 65_536
_KEEP_HEAD = 49_152
_KEEP_TAIL = 16_384
_EVIDENCE_CHARS = 160
_CONTEXT = 40
#: Most clauses a :class:`Verdict` names (one per rule family, strongest first).
MAX_CLAUSES = 8
_CLAUSE_REACH = 100
# Sentence marks, and the markup and quotes a wrapper puts around quoted text (the
# normalised text has no line breaks: "<context>\n...\n</context>" is one line).
_CLAUSE_MARKS = '.!?;:<>"`{}[]|'

#: The hardening guide's filter, kept to report what it would have replaced.
GUIDE_PATTERN = re.compile(r"ignore previous|disregard your|system prompt:", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Verdict:
    """The result of :func:`scan`.

    ``score`` is in 0..1; ``is_attack`` is ``score >= threshold`` (the shipped default
    unless the caller passed another). ``category`` is ``injection``, ``jailbreak`` or
    ``extraction`` for an attack and ``none`` otherwise. ``evidence`` is the part of the
    normalised prompt (lower case, de-obfuscated) that weighed most, with control and
    invisible characters escaped and at most 160 characters; empty when nothing
    pointed to an attack. It never quotes a secret: it is taken from the prompt (or the
    decoded blob that scored) with what :func:`~.secrets.find_secrets` finds redacted,
    and ``category`` from the same text. ``reasons`` names the rule families and the
    n-gram behind the score; ``decoded`` is ``base64`` or ``hex`` when the score came
    from a decoded blob, ``tags`` when it came from the text with its Unicode tag
    characters decoded (:func:`~.normalize.tag_view`); ``truncated`` is true when the
    prompt was longer than :data:`MAX_SCAN_CHARS`. ``rule_score`` is the score of the rule
    families alone (the model's bias plus the weights of the families that matched in the
    text that scored, no n-grams): high only when regex evidence, not word statistics, says
    attack; the daemon counts a prompt towards abuse only when it is at least
    ``abuse_rule_score`` too. ``clauses`` holds, for each rule family that points to an
    attack (positive weight) and matched in that text, strongest first, at most
    :data:`MAX_CLAUSES`, the family and the clause it matched in: the normalised text
    between the sentence marks, markup and quotes (``. ! ? ; : < > " ` { } [ ] |``) around
    the match, at most 100 characters either side of it, escaped, secrets redacted. It names
    an attack by its own words whatever wraps it: the daemon counts abuse by clause, so one
    attack quoted again in other prompts (a chat UI's title, tag and search-query tasks
    re-send the history) is one attempt.
    """

    is_attack: bool
    score: float
    category: str
    evidence: str
    reasons: tuple[str, ...] = ()
    threshold: float = 0.5
    decoded: str | None = None
    truncated: bool = False
    rule_score: float = 0.0
    clauses: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing :func:`sanitize_prompt` found: a rule family or the guide's pattern."""

    name: str
    category: str
    snippet: str


@dataclass(frozen=True, slots=True)
class SanitizeResult:
    """What :func:`sanitize_prompt` found; ``text`` is the caller's prompt, not rewritten.

    ``text`` is the prompt cut at ``max_chars`` (and nothing else changed);
    ``truncated`` says whether it was cut and ``original_chars`` how long it was. The
    ``verdict`` is for the *whole* prompt, including any part that was cut off.
    ``findings`` lists each rule family that fired (normalised snippet, escaped), and
    ``guide_matches`` the snippets the hardening guide's regex would have replaced by
    ``[filtered]`` (for comparison: that filter misses almost every real attack).
    """

    text: str
    truncated: bool
    original_chars: int
    verdict: Verdict
    findings: tuple[Finding, ...]
    guide_matches: tuple[str, ...]

    @property
    def is_attack(self) -> bool:
        """Shortcut for ``verdict.is_attack``."""
        return self.verdict.is_attack


def _join(text: str | Sequence[str]) -> str:
    if isinstance(text, str):
        return text
    return "\n".join(text)


def _bounded(raw: str) -> tuple[str, bool]:
    if len(raw) <= MAX_SCAN_CHARS:
        return raw, False
    return raw[:_KEEP_HEAD] + "\n" + raw[-_KEEP_TAIL:], True


def _snippet(norm: str, start: int, end: int) -> str:
    lo = max(0, start - _CONTEXT)
    if lo > 0:  # start the snippet on a word
        space = norm.rfind(" ", max(0, lo - 20), lo)
        lo = space + 1 if space >= 0 else (0 if lo <= 20 else lo)
    hi = min(len(norm), max(end, start + 1) + _CONTEXT)
    return escape_snippet(norm[lo:hi], _EVIDENCE_CHARS)


def _clause(norm: str, start: int, end: int) -> str:
    """The clause of ``norm`` around ``norm[start:end]``: from the sentence mark before
    it to the one after it, at most :data:`_CLAUSE_REACH` characters either side."""
    lo = max(0, start - _CLAUSE_REACH)
    hi = min(len(norm), end + _CLAUSE_REACH)
    left = max(norm.rfind(mark, lo, start) for mark in _CLAUSE_MARKS)
    lo = left + 1 if left >= 0 else lo
    for mark in _CLAUSE_MARKS:
        at = norm.find(mark, end, hi)
        if at >= 0:
            hi = at
    return escape_snippet(norm[lo:hi].strip(), _EVIDENCE_CHARS + 2 * _CLAUSE_REACH)


def _explain(
    model: GuardModel, norm: str, feats: Features
) -> tuple[str, tuple[str, ...], tuple[tuple[str, str], ...]]:
    """The evidence snippet, the reasons and the clauses (see :class:`Verdict`)."""
    rule_w = model.rule_w
    positive = sorted(
        (h for h in feats.rules if rule_w.get(h.name, 0.0) > 0),
        key=lambda h: -rule_w.get(h.name, 0.0),
    )
    reasons = [f"rule:{h.name}" for h in positive]
    clauses = tuple((h.name, _clause(norm, h.start, h.end)) for h in positive[:MAX_CLAUSES])
    top = model.top_word(feats)
    if top is not None:
        reasons.append(f"ngram:{escape_snippet(top[0], 60)}")
    if positive:
        best = positive[0]
        return _snippet(norm, best.start, best.end), tuple(reasons), clauses
    if top is not None:
        at = norm.find(top[0])
        if at >= 0:
            return _snippet(norm, at, at + len(top[0])), tuple(reasons), clauses
    return "", tuple(reasons), clauses


def scan(
    text: str | Sequence[str],
    *,
    threshold: float | None = None,
    model: GuardModel | None = None,
) -> Verdict:
    """Score a prompt (or a list of messages, scanned as one text) for prompt attacks.

    Never raises on any string input; the work is bounded (see :data:`MAX_SCAN_CHARS`).
    """
    mdl = model if model is not None else default_model()
    limit = mdl.threshold if threshold is None else threshold
    raw, truncated = _bounded(_join(text))
    norm = normalize(raw)
    feats = extract(norm)
    score = mdl.score(feats)
    decoded: str | None = None
    view_text = raw
    views = decoded_blobs(raw)
    hidden = tag_view(raw)
    if hidden is not None:
        views.insert(0, ("tags", hidden))
    for kind, plain in views:
        d_norm = normalize(plain)
        d_feats = extract(d_norm)
        d_score = mdl.score(d_feats)
        if d_score > score:
            score, norm, feats, decoded, view_text = d_score, d_norm, d_feats, kind, plain
    is_attack = score >= limit
    rule_score = mdl.rule_score(feats)
    if is_attack or score >= limit / 2:
        # The evidence never quotes a secret: it comes from the view that scored (the
        # prompt or a decoded blob) with its secrets redacted; the score stays the
        # one of the text as sent.
        found = find_secrets(view_text, decoded=decoded in (None, "tags"))
        if found:
            norm = normalize(redact_secrets(view_text, found))
            feats = extract(norm)
        evidence, reasons, clauses = _explain(mdl, norm, feats)
    else:
        evidence, reasons, clauses = "", (), ()
    if decoded is not None:
        reasons = (*reasons, f"decoded:{decoded}")
    category = mdl.category(feats) if is_attack else "none"
    return Verdict(
        is_attack,
        score,
        category,
        evidence,
        reasons,
        limit,
        decoded,
        truncated,
        rule_score,
        clauses,
    )


def sanitize_prompt(
    text: str | Sequence[str],
    *,
    max_chars: int = 4096,
    threshold: float | None = None,
    model: GuardModel | None = None,
) -> SanitizeResult:
    """Report what a prompt contains instead of silently rewriting it.

    The hardening guide's ``sanitize_prompt`` replaced ``ignore previous``, ``disregard
    your`` and ``system prompt:`` with ``[filtered]`` and cut the prompt at 4,096
    characters. That gave a false sense of safety: on public labelled sets it misses
    about 98% of attacks (any paraphrase, another language, an encoding or a persona
    prompt passes), and a prompt with ``[filtered]`` in it still reaches the model with
    the rest of the attack intact. Filtering text is not a defence against prompt
    injection; the model must be treated as able to follow any instruction it reads.

    This function therefore does not rewrite anything. It returns the prompt cut at
    ``max_chars`` (the only change, and it is reported), the :class:`Verdict` of the whole
    prompt, the rule families that fired with their snippets, and what the guide's regex
    would have replaced. The caller decides: refuse, log, ask for confirmation, or run
    the request with fewer privileges (no tools, no secrets in the system prompt).
    """
    raw = _join(text)
    verdict = scan(raw, threshold=threshold, model=model)
    bounded, _ = _bounded(raw)
    norm = normalize(redact_secrets(bounded, find_secrets(bounded, decoded=True)))
    findings = tuple(
        Finding(h.name, h.category, _snippet(norm, h.start, h.end)) for h in match_rules(norm)
    )
    guide = tuple(escape_snippet(m.group(), 60) for m in GUIDE_PATTERN.finditer(bounded))
    kept = raw[:max_chars]
    return SanitizeResult(kept, len(raw) > max_chars, len(raw), verdict, findings, guide)
