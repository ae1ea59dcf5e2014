"""Secrets and personal data in prompts: keys, tokens, card numbers, e-mail addresses.

``find_secrets(text)`` returns one :class:`SecretFinding` per secret. A finding never
carries the secret: ``redacted`` keeps the kind's public prefix and at most the last four
characters (``AKIA…[16 chars]…MPLE``), so findings can go to logs, metrics and ledgers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["EMAIL_BULK", "MAX_SECRET_SCAN", "SecretFinding", "find_secrets", "redact_secrets"]

#: Only the first this many characters are searched.
MAX_SECRET_SCAN = 262_144
#: This many distinct e-mail addresses in one prompt make a finding (a list, not a signature).
EMAIL_BULK = 5


@dataclass(frozen=True, slots=True)
class SecretFinding:
    """One secret: its kind, where it is, and a redacted form safe to log."""

    kind: str
    start: int
    end: int
    redacted: str


_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    # (kind, pattern, characters of public prefix to keep)
    (
        "private_key",
        re.compile(
            r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
            r"[\s\S]{0,8192}?(?:-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|$)"
        ),
        0,
    ),
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"), 4),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{60,255})\b"), 4),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,250}\b"), 5),
    ("openai_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,200}\b"), 3),
    ("anthropic_key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,200}\b"), 7),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), 4),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,60}\b"), 3),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,120}\b"), 8),
    (
        "jwt",
        re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b"),
        3,
    ),
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b")


def _redact(secret: str, keep_prefix: int) -> str:
    tail = secret[-4:] if len(secret) >= 16 else ""
    return f"{secret[:keep_prefix]}…[{len(secret)} chars]…{tail}"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def find_secrets(text: str) -> list[SecretFinding]:
    """Secrets in ``text`` (first 256 KiB), in order of position, redacted."""
    text = text[:MAX_SECRET_SCAN]
    found: list[SecretFinding] = []
    for kind, pattern, keep in _PATTERNS:
        for m in pattern.finditer(text):
            if kind == "openai_key" and m.group().startswith("sk-ant-"):
                continue
            redacted = "[private key block]" if kind == "private_key" else None
            found.append(
                SecretFinding(kind, m.start(), m.end(), redacted or _redact(m.group(), keep))
            )
    for m in _CARD.finditer(text):
        digits = m.group().replace(" ", "").replace("-", "")
        if 13 <= len(digits) <= 19 and digits[0] in "23456" and _luhn(digits):
            found.append(SecretFinding("credit_card", m.start(), m.end(), f"card …{digits[-4:]}"))
    emails = list(_EMAIL.finditer(text))
    distinct = {m.group().lower() for m in emails}
    if len(distinct) >= EMAIL_BULK:
        first, last = emails[0], emails[-1]
        found.append(
            SecretFinding(
                "email_bulk", first.start(), last.end(), f"[{len(distinct)} e-mail addresses]"
            )
        )
    found.sort(key=lambda f: (f.start, f.kind))
    return found


def redact_secrets(text: str, found: list[SecretFinding] | None = None) -> str:
    """``text`` with every secret :func:`find_secrets` finds replaced by its redacted form.

    Pass ``found`` when the secrets of ``text`` were already looked for. Overlapping
    findings are merged (the first one's redacted form stands for both). Text past the
    first :data:`MAX_SECRET_SCAN` characters is kept as it is, unsearched.
    """
    if found is None:
        found = find_secrets(text)
    if not found:
        return text
    out: list[str] = []
    at = 0
    for f in sorted(found, key=lambda f: (f.start, -f.end)):
        if f.end <= at:
            continue
        out.append(text[at : max(at, f.start)])
        out.append(f"[{f.redacted}]" if not f.redacted.startswith("[") else f.redacted)
        at = f.end
    out.append(text[at:])
    return "".join(out)
