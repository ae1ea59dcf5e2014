"""Secrets and personal data in prompts: keys, tokens, card numbers, e-mail addresses.

``find_secrets(text)`` returns one :class:`SecretFinding` per secret. A finding never
carries the secret: ``redacted`` keeps the kind's public prefix and at most the last four
characters (``AKIA…[16 chars]…MPLE``), or only the length for secrets told by their
context (passwords, AWS secret keys, Azure account keys: ``[40 chars]``; a URL's
credentials: ``postgres://[23 chars]@``), so findings can go to logs, metrics and ledgers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aisentinel.guard.normalize import blob_spans

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


_RUN_START = r"(?<![A-Za-z0-9_-])"

_PATTERNS: tuple[tuple[str, re.Pattern[str], int], ...] = (
    # (kind, pattern, characters of public prefix to keep)
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"), 4),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_\w{60,255})\b"), 4),
    # A token starts after a character that cannot be in it: a start at every prefix of
    # "xoxb-xoxb-..." or "sk-sk-sk-..." would scan up to the bound from each.
    ("slack_token", re.compile(rf"{_RUN_START}xox[abposr]-[A-Za-z0-9-]{{10,250}}\b"), 5),
    (
        "openai_key",
        re.compile(rf"{_RUN_START}sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{20,200}}\b"),
        3,
    ),
    ("anthropic_key", re.compile(rf"{_RUN_START}sk-ant-[A-Za-z0-9_-]{{20,200}}\b"), 7),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"), 4),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,60}\b"), 3),
    ("stripe_key", re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,120}\b"), 8),
    (
        "jwt",
        # No start inside a run of token characters: with a start at every "eyJ" of
        # "eyJ-eyJ-eyJ-..." each start scanned to the end of the run (quadratic).
        re.compile(
            rf"{_RUN_START}eyJ[A-Za-z0-9_-]{{8,}}+\.eyJ[A-Za-z0-9_-]{{8,}}+\.[A-Za-z0-9_-]{{8,}}\b"
        ),
        3,
    ),
)
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b")

# Private keys: each BEGIN line, then its END looked for with str.find within
# _PEM_SPAN characters (a lazy regex scan to the bound from every BEGIN took half a
# second on a body of BEGIN lines); without an END, the block runs to the bound.
_PEM_BEGIN = re.compile(
    r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED |PGP )?PRIVATE KEY(?: BLOCK)?-----"
)
_PEM_END = re.compile(r"-----END [A-Z ]{0,24}PRIVATE KEY(?: BLOCK)?-----")
_PEM_END_MARK = "-----END "
_PEM_SPAN = 8192

# Secrets told by their context, not their shape (a 40-character base64 string alone
# is not an AWS secret key); the secret is group 1.
_AWS_SECRET = re.compile(
    r"(?i:aws[_-]?secret(?:[_-]?access)?[_-]?key|secret[_-]?access[_-]?key)"
    r"[\"']?\s{0,4}[:=]>?\s{0,4}[\"']?([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)
# ... or a 40-character key right after an access key id, only separators between
# (credentials.csv: "AKIA...,wJalr...").
_AWS_SECRET_NEXT = re.compile(r"[\s,;:|=\"']{1,12}([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])")
_AZURE_KEY = re.compile(r"(?<![A-Za-z])(?:Account|SharedAccess)Key=([A-Za-z0-9+/]{20,120}={0,2})")
# scheme://user:password@ (database URLs, proxies, git remotes).
_URL_CREDENTIALS = re.compile(
    r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]{1,15})://"
    r"[^\s:/?#@\"'<>]{1,128}:([^\s/?#@\"'<>]{1,256})@"
)
# password = ..., "password": "...", the password is ...
_PASSWORD = re.compile(
    r"(?i:\b(?:password|passwd|passphrase|db_?pass(?:word)?)\b)[\"']?\s{0,3}"
    r"(?::|=|\bis\b)\s{0,3}[\"']?([^\s\"'<>,;]{8,128})"
)
_PLACEHOLDER_START = tuple("${<%*[(")
_PLACEHOLDERS = frozenset({"password", "changeme", "xxxxxxxx", "redacted", "required", "secret"})


def _redact(secret: str, keep_prefix: int) -> str:
    tail = secret[-4:] if len(secret) >= 16 else ""
    return f"{secret[:keep_prefix]}…[{len(secret)} chars]…{tail}"


def _hidden(secret: str) -> str:
    """A secret with no public part: only its length."""
    return f"[{len(secret)} chars]"


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


def _private_keys(text: str, found: list[SecretFinding]) -> None:
    at = 0
    while (begin := _PEM_BEGIN.search(text, at)) is not None:
        start, limit = begin.end(), begin.end() + _PEM_SPAN
        end = min(limit, len(text))  # no END: the block runs to the bound
        look = start
        while (mark := text.find(_PEM_END_MARK, look, limit + len(_PEM_END_MARK))) >= 0:
            m = _PEM_END.match(text, mark)
            if m is not None:
                end = m.end()
                break
            look = mark + 1
        found.append(SecretFinding("private_key", begin.start(), end, "[private key block]"))
        at = end  # a BEGIN inside the block is part of it


def _plausible_password(value: str) -> bool:
    """A value after ``password``/``is`` that looks like one, not a word or a placeholder."""
    if value.startswith(_PLACEHOLDER_START) or value.lower() in _PLACEHOLDERS:
        return False
    if any(c.isdigit() for c in value):
        return any(c.isalpha() for c in value) or len(value) >= 10
    # No digit: mixed case with a symbol ("Correct-Horse!"), not "case-sensitive".
    return (
        any(c.isupper() for c in value)
        and any(c.islower() for c in value)
        and any(not c.isalnum() for c in value)
    )


def _mixed(key: str) -> bool:
    return any(c.isupper() for c in key) and any(c.islower() for c in key)


def _context_secrets(text: str, found: list[SecretFinding]) -> None:
    # Each pattern runs only when its literal part is there (most prompts: none).
    lower = text.lower()
    for m in _AWS_SECRET.finditer(text) if "secret" in lower else ():
        found.append(SecretFinding("aws_secret_key", m.start(1), m.end(1), _hidden(m.group(1))))
    for f in [f for f in found if f.kind == "aws_access_key"]:
        near = _AWS_SECRET_NEXT.match(text, f.end)
        if near is not None and _mixed(near.group(1)):
            key = near.group(1)
            found.append(SecretFinding("aws_secret_key", near.start(1), near.end(1), _hidden(key)))
    for m in _AZURE_KEY.finditer(text) if "Key=" in text else ():
        found.append(SecretFinding("azure_account_key", m.start(1), m.end(1), _hidden(m.group(1))))
    for m in _URL_CREDENTIALS.finditer(text) if "://" in text else ():
        password = m.group(2)
        if password.startswith(_PLACEHOLDER_START) or password.lower() in _PLACEHOLDERS:
            continue
        userinfo = m.end() - m.end(1) - 4  # between "://" and "@"
        redacted = f"{m.group(1)}://[{userinfo} chars]@"
        found.append(SecretFinding("url_credentials", m.start(), m.end(), redacted))
    for m in _PASSWORD.finditer(text) if "pass" in lower else ():
        value = m.group(1)
        if _plausible_password(value):
            found.append(SecretFinding("password", m.start(1), m.end(1), _hidden(value)))


def find_secrets(text: str, *, decoded: bool = False) -> list[SecretFinding]:
    """Secrets in ``text`` (first 256 KiB), in order of position, redacted.

    With ``decoded``, the base64 and hex blobs that :func:`~.normalize.decoded_blobs`
    would decode are searched too: a secret inside one is reported with the blob's span
    (``[base64: AKIA…]``), so that :func:`redact_secrets` hides the whole blob.
    The work is linear in the length of ``text`` (``bench/guard_hostile.py``).
    """
    text = text[:MAX_SECRET_SCAN]
    found: list[SecretFinding] = []
    if "-----BEGIN " in text:
        _private_keys(text, found)
    for kind, pattern, keep in _PATTERNS:
        for m in pattern.finditer(text):
            if kind == "openai_key" and m.group().startswith("sk-ant-"):
                continue
            found.append(SecretFinding(kind, m.start(), m.end(), _redact(m.group(), keep)))
    _context_secrets(text, found)
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
    if decoded:
        # A blob repeated thousands of times is searched once: each decoding's secrets
        # are remembered (every copy is still reported, so that each is redacted).
        inside: dict[str, list[SecretFinding]] = {}
        for blob, start, end, plain in blob_spans(text):
            inner_found = inside.get(plain)
            if inner_found is None:
                inner_found = inside[plain] = find_secrets(plain)
            for inner in inner_found:
                shown = inner.redacted.strip("[]")
                found.append(SecretFinding(inner.kind, start, end, f"[{blob}: {shown}]"))
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
