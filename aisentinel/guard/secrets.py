"""Secrets and personal data in prompts: keys, tokens, card numbers, e-mail addresses.

``find_secrets(text)`` returns one :class:`SecretFinding` per secret. A finding never
carries the secret: ``redacted`` keeps the kind's public prefix and at most the last four
characters (``AKIA…[16 chars]…MPLE``), or only the length for secrets told by their
context (passwords, AWS secret keys, Azure account keys and client secrets, API keys and
bearer tokens: ``[40 chars]``; a URL's credentials: ``postgres://[23 chars]@``), so
findings can go to logs, metrics and ledgers.

Percent-encoded text (a URL, a query string or a form body pasted into a prompt:
``aws_secret_access_key=wJalr%2FK7...``, ``Authorization%3A%20Bearer%20sk-...``) is
decoded once and searched too; a secret found there is reported on the characters it
was decoded from (``[url-encoded: 40 chars]``) unless a finding of the text itself
covers them.

Well-known documentation examples are not secrets, whatever their context: AWS's
example keys and any key or token ending in ``EXAMPLE`` or ``EXAMPLEKEY`` the way AWS
writes them (``AKIAIOSFODNN7EXAMPLE``, ``wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY``),
JWTs carrying jwt.io's sample claims (``{"sub":"1234567890","name":"John Doe"...``),
and payment processors' test card numbers (Stripe's and PayPal's listed ones, and any
card number of at most three distinct digits: ``4242 4242 4242 4242``,
``4111 1111 1111 1111``).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import accumulate
from urllib.parse import unquote

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

# re.ASCII: a key's edges (\b) are ASCII, so that a key right next to a letter of
# another script ("密钥是ghp_...", "AKIA...é") is found.
# (kind, pattern, characters of public prefix to keep (-1: what the kind's _PREFIXES
#  pattern matches, never more), whether the part after the prefix must look random: see
#  _random_looking)
_PATTERNS: tuple[tuple[str, re.Pattern[str], int, bool], ...] = (
    ("aws_access_key", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b", re.ASCII), 4, False),
    (
        "github_token",
        re.compile(
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{60,255})\b", re.ASCII
        ),
        4,
        False,
    ),
    # GitLab: personal, deploy, runner, trigger, feed, CI job, OAuth, service account,
    # incoming mail, agent and feature-flag tokens: 20 characters, or the routable
    # form (a longer payload, then ".", a 2-character version and a 7-character CRC);
    # runner registration tokens (GR1348941...).
    (
        "gitlab_token",
        re.compile(
            rf"{_RUN_START}(?:gl(?:pat|dt|rt|ptt|ft|cbt|oas|soat|imt|agent|ffct)-"
            r"[0-9A-Za-z_-]{20,300}(?:\.[0-9a-z]{2}[0-9a-z]{7})?|GR1348941[0-9A-Za-z_-]{20})\b",
            re.ASCII,
        ),
        -1,
        True,
    ),
    # A token starts after a character that cannot be in it: a start at every prefix of
    # "xoxb-xoxb-..." or "sk-sk-sk-..." would scan up to the bound from each.
    (
        "slack_token",
        re.compile(rf"{_RUN_START}xox[abposre]-[A-Za-z0-9-]{{10,250}}\b", re.ASCII),
        5,
        True,
    ),
    (
        "openai_key",
        re.compile(
            rf"{_RUN_START}sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{{20,300}}\b", re.ASCII
        ),
        3,
        True,
    ),
    (
        "anthropic_key",
        re.compile(rf"{_RUN_START}sk-ant-[A-Za-z0-9_-]{{20,300}}\b", re.ASCII),
        7,
        True,
    ),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![0-9A-Za-z_-])", re.ASCII), 4, False),
    # hf_ (user) and api_org_ (organisation) and 34 letters and digits.
    ("huggingface_token", re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{34}\b", re.ASCII), 3, True),
    (
        "stripe_key",
        re.compile(r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,120}\b", re.ASCII),
        8,
        True,
    ),
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b", re.ASCII), 4, True),
    # A macaroon whose base64 starts with the location "pypi.org" (or "test.pypi.org").
    (
        "pypi_token",
        re.compile(
            r"\bpypi-(?:AgEIcHlwaS5vcmc|AgENdGVzdC5weXBpLm9yZw)[A-Za-z0-9_-]{50,1000}", re.ASCII
        ),
        5,
        False,
    ),
    (
        "jwt",
        # No start inside a run of token characters: with a start at every "eyJ" of
        # "eyJ-eyJ-eyJ-..." each start scanned to the end of the run (quadratic).
        re.compile(
            rf"{_RUN_START}eyJ[A-Za-z0-9_-]{{8,}}+\.eyJ[A-Za-z0-9_-]{{8,}}+\.[A-Za-z0-9_-]{{8,}}\b",
            re.ASCII,
        ),
        3,
        False,
    ),
)
_PREFIXES = {
    "gitlab_token": re.compile(r"gl[a-z]{2,5}-|GR1348941"),
    "slack_token": re.compile(r"xox[a-z]-"),
    "openai_key": re.compile(r"sk-(?:proj-|svcacct-|admin-)?"),
    "anthropic_key": re.compile(r"sk-ant-"),
    "huggingface_token": re.compile(r"hf_|api_org_"),
    "stripe_key": re.compile(r"[a-z]{2}_[a-z]{4}_"),
    "npm_token": re.compile(r"npm_"),
}
"""The public prefix of the kinds whose rest must look random."""
_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}\b", re.ASCII)

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
# Entra ID (Azure AD) client secrets: 3 characters, a digit, "Q~", 31-34 more.
_AZURE_CLIENT_SECRET = re.compile(
    r"(?<![A-Za-z0-9_~.-])[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}+(?![A-Za-z0-9_~.-])"
)
# An API key or token given by its name (X_API_KEY=..., "access_token": "...", an
# Authorization or X-Api-Key header; "+" for a space, as in a form body); the value,
# group 1, must look random. The value is taken possessively: no backtracking.
_API_TOKEN = re.compile(
    r"(?<![A-Za-z0-9])(?i:(?:authorization|proxy-authorization)[\"']?\s{0,4}[:=](?:\s|\+){0,4}"
    r"[\"']?"
    r"(?:bearer|token|basic)(?:\s|\+){1,4}"
    r"|(?:x-api-key|api[_-]?key|api[_-]?token|access[_-]?token|auth[_-]?token|"
    r"refresh[_-]?token|private[_-]?token|client[_-]?secret|secret[_-]?key)[\"']?\s{0,4}"
    r"[:=]>?\s{0,4}[\"']?(?:bearer(?:\s|\+){1,4})?"
    r"|--(?:api-key|api-token|access-token|auth-token|private-token)(?:\s{1,4}|=)[\"']?)"
    r"([A-Za-z0-9._~+/=-]{16,512}+)(?![A-Za-z0-9._~+/=(-])"
)
# A value that is code, not a key: a dotted name of short pieces ("models.gpt4o.key",
# "cfg.v2.api_key"), each a name (_code_name); a value followed by "(" (a call) is never
# taken (_API_TOKEN).
_DOTTED_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,15}(?:\.[A-Za-z_][A-Za-z0-9_]{0,15})+")
# A key of letters only (about 3% of random 20-character base62 keys have no digit): a
# run of 20+ letters, a quarter of them or more upper case and as many lower case
# ("ThisIsMyApiKey" is words, not a key).
_LETTERS = re.compile(r"[A-Za-z]{20,}")
_API_TOKEN_WORDS = ("auth", "key", "token", "secret")
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

# Percent-encoded text: a run of characters up to a space, a quote or an angle bracket,
# only from the start of a run (one start per run, not one per character), with a
# %XX in it; decoded once.
_PERCENT_RUN = re.compile(
    r"(?<![^\s\"'<>])(?=(?:[^\s\"'<>%]|%(?![0-9A-Fa-f]{2}))*+%[0-9A-Fa-f]{2})[^\s\"'<>]++"
)
_PERCENT_SEP = "\n\n"
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# A run is searched with the text before it, up to this many characters (from just
# after a space, a quote or an angle bracket, where nothing is cut in two; not into the
# run before): the name of a value that has an escape ("api_key: wJalr%2F...", "Bearer
# Zk3j%2F..."), which the patterns allow on the line before too ("api_key:\n  ...").
_PERCENT_CONTEXT = 64
_CONTEXT_START = re.compile(r"(?<=[\s\"'<>])")


def _redact(secret: str, keep_prefix: int) -> str:
    """``secret``'s first ``keep_prefix`` characters (its public prefix), its length and,
    from 16 characters, its last four."""
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


def _random_looking(body: str, *, case_counts: bool = True) -> bool:
    """``body`` is not cut into short words (a separator per 6 characters at most) and a
    piece of it (4+ letters and digits) mixes digits and letters, or with
    ``case_counts`` upper and lower case: a key, not a slug ("sk-learn-0-24-release",
    "xoxb-token-goes-here") or a placeholder ("sk_test_xxxxxxxxxxxxxxxx")."""
    pieces = _SEPARATORS.split(body)
    if (len(pieces) - 1) * 6 > len(body):
        return False
    for piece in pieces:
        if len(piece) < 4 or piece.isdigit():
            continue
        if not piece.isalpha():
            return True  # letters and digits
        if case_counts and not piece.islower() and not piece.isupper():
            return True
    return False


def _code_name(value: str) -> bool:
    """``value`` is a dotted name whose every piece reads as a name, not random text: at
    most two digits and, if mixed case, a third of its letters upper case at most
    ("settings.openAiKey2", not "Q9w8e7R6t5Y4u3I2.o")."""
    if _DOTTED_NAME.fullmatch(value) is None:
        return False
    for piece in value.split("."):
        upper = sum(1 for c in piece if c.isupper())
        lower = sum(1 for c in piece if c.islower())
        if sum(1 for c in piece if c.isdigit()) > 2 or (lower and 3 * upper > upper + lower):
            return False
    return True


def _letter_key(value: str) -> bool:
    """``value`` holds a run of letters that looks random by its case (see _LETTERS)."""
    for m in _LETTERS.finditer(value):
        run = m.group()
        upper = sum(1 for c in run if c.isupper())
        if 4 * upper >= len(run) and 4 * (len(run) - upper) >= len(run):
            return True
    return False


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
    for m in _AZURE_CLIENT_SECRET.finditer(text) if "Q~" in text else ():
        found.append(SecretFinding("azure_client_secret", m.start(), m.end(), _hidden(m.group())))
    if any(word in lower for word in _API_TOKEN_WORDS):
        _api_tokens(text, found)
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


class _Spans:
    """Spans sorted by start, with the furthest end reached so far: whether a span
    overlaps or covers a given one, each in O(log n), however many spans there are."""

    __slots__ = ("reach", "starts")

    def __init__(self, spans: Iterable[tuple[int, int]]) -> None:
        ordered = sorted(spans)
        self.starts = [s for s, _ in ordered]
        self.reach = list(accumulate((e for _, e in ordered), max))

    def overlaps(self, start: int, end: int) -> bool:
        """Some span has a character in ``[start, end)``."""
        i = bisect_left(self.starts, end)  # the spans that start before ``end``
        return i > 0 and self.reach[i - 1] > start

    def straddle(self, at: int) -> bool:
        """Some span starts before ``at`` and ends after it."""
        i = bisect_left(self.starts, at)
        return i > 0 and self.reach[i - 1] > at

    def covers(self, start: int, end: int) -> bool:
        """Some span holds all of ``[start, end)``."""
        i = bisect_right(self.starts, start)  # the spans that start at ``start`` or before
        return i > 0 and self.reach[i - 1] >= end


def _api_tokens(text: str, found: list[SecretFinding]) -> None:
    """Values named as API keys or tokens that no other kind found already."""
    taken = _Spans((f.start, f.end) for f in found)
    for m in _API_TOKEN.finditer(text):
        start, end = m.span(1)
        value = m.group(1)
        if value.startswith(_PLACEHOLDER_START) or not (
            _random_looking(value, case_counts=False) or _letter_key(value)
        ):
            continue
        if _code_name(value) or taken.overlaps(start, end):
            continue
        found.append(SecretFinding("api_token", start, end, _hidden(value)))


def _percent_encoded(text: str, found: list[SecretFinding]) -> None:
    """The secrets of ``text``'s percent-encoded runs, decoded once, that ``found`` does
    not hold already: the runs, each with the text before it (up to
    :data:`_PERCENT_CONTEXT` characters, none with an escape: the name of a value), are
    joined, decoded and searched in one go (one call each, however many runs), and a
    finding is reported on the characters of ``text`` it was decoded from.

    A decoded secret is left out only where a finding of ``text`` itself covers those
    characters (a key next to an encoded "/"); one that covers findings of its kind
    replaces them (a token cut at an escape was found in part); one that overlaps others
    is added beside them (:func:`redact_secrets` hides both). Never by value: the same
    key plain in one place and encoded in another is two findings.

    Decoded as Latin-1, each escape is one character: a position in the decoding is
    mapped back by counting the escapes before it (secrets are ASCII; other text only
    has to keep its length)."""
    runs: list[tuple[int, int]] = []
    end = 0  # the end of the run before
    for m in _PERCENT_RUN.finditer(text):
        start = m.start()
        lower = max(end, start - _PERCENT_CONTEXT)
        if lower > 0:
            at = _CONTEXT_START.search(text, lower, start)
            lower = start if at is None else at.start()
        end = m.end()
        runs.append((lower, end))
    if not runs:
        return
    raw = _PERCENT_SEP.join([text[s:e] for s, e in runs])
    plain = unquote(raw, encoding="latin-1")
    # Escape i (3 characters in raw) is one character at raw position - 2 * i in plain.
    shrunk = [m.start() - 2 * i for i, m in enumerate(_ESCAPE.finditer(raw))]
    starts: list[int] = []  # where each run starts in raw
    n = 0
    for s, e in runs:
        starts.append(n)
        n += e - s + len(_PERCENT_SEP)

    def place(at: int) -> tuple[int, int]:
        """Where the character at ``at`` in plain was in ``text``: its start and end
        (3 characters for an escape; a separator's, the end of the run before it)."""
        i = bisect_left(shrunk, at)
        here = at + 2 * i  # in raw
        width = 3 if i < len(shrunk) and shrunk[i] == at else 1
        r = bisect_right(starts, here) - 1
        run_start, run_end = runs[r]
        start = min(run_start + here - starts[r], run_end)
        return start, min(start + width, run_end)

    ordered = sorted(found, key=lambda f: f.start)
    firsts = [f.start for f in ordered]
    plain_spans = _Spans((f.start, f.end) for f in ordered)
    dropped: set[int] = set()  # positions in ordered of findings a decoded one replaces
    for inner in _find(plain):
        start, end = place(inner.start)[0], place(inner.end - 1)[1]
        if plain_spans.covers(start, end):
            continue  # seen without decoding
        if plain_spans.overlaps(start, end) and not plain_spans.straddle(start):
            # Findings start inside: replaced if all of them are this kind's, inside.
            inside = range(bisect_left(firsts, start), bisect_left(firsts, end))
            if all(ordered[i].kind == inner.kind and ordered[i].end <= end for i in inside):
                dropped.update(inside)
        shown = inner.redacted.strip("[]")
        found.append(SecretFinding(inner.kind, start, end, f"[url-encoded: {shown}]"))
    if dropped:
        gone = {id(ordered[i]) for i in dropped}
        found[:] = [f for f in found if id(f) not in gone]


# The payload of jwt.io's sample token, {"sub":"1234567890","name":"John Doe" (base64url).
_EXAMPLE_JWT_CLAIMS = ".eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9l"
# Test card numbers documented by Stripe and PayPal/Braintree with more than three
# distinct digits (those with three or fewer are all examples: see _example).
_EXAMPLE_CARDS = frozenset(
    [
        "4000056655665556",
        "2223003122003222",
        "5200828282828210",
        "378282246310005",
        "371449635398431",
        "6011111111111117",
        "6011000990139424",
        "3056930009020004",
        "36227206271667",
        "3566002020360505",
        "6200000000000005",
        "4012888888881881",
        "4000000000009995",
        "6011000400000000",
        "3530111333300000",
        "5105105105105100",
        "4000000000003220",
    ]
)


def _example(kind: str, value: str) -> bool:
    """Whether ``value`` (a finding's text) is a well-known documentation example: see the
    module doc."""
    if value.endswith(("EXAMPLE", "EXAMPLEKEY")):
        return True
    if kind == "jwt":
        return value[value.find(".") :].startswith(_EXAMPLE_JWT_CLAIMS)
    if kind == "credit_card":
        digits = value.replace(" ", "").replace("-", "")
        return len(set(digits)) <= 3 or digits in _EXAMPLE_CARDS
    return False


def _find(text: str) -> list[SecretFinding]:
    """The secrets of ``text`` itself (nothing decoded), unordered."""
    found: list[SecretFinding] = []
    if "-----BEGIN " in text:
        _private_keys(text, found)
    for kind, pattern, keep, random in _PATTERNS:
        for m in pattern.finditer(text):
            token = m.group()
            if kind == "openai_key" and token.startswith("sk-ant-"):
                continue
            shown = keep
            if random or keep < 0:
                prefix = _PREFIXES[kind].match(token)
                public = prefix.end() if prefix else 0
                if random and not _random_looking(token[public:]):
                    continue
                if keep < 0:
                    shown = public  # the prefix only: a "-" in the random part is not one
            found.append(SecretFinding(kind, m.start(), m.end(), _redact(token, shown)))
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
    if (
        "EXAMPLE" in text
        or _EXAMPLE_JWT_CLAIMS[1:] in text
        or any(f.kind == "credit_card" for f in found)
    ):
        found = [f for f in found if not _example(f.kind, text[f.start : f.end])]
    return found


def find_secrets(text: str, *, decoded: bool = False) -> list[SecretFinding]:
    """Secrets in ``text`` (first 256 KiB), in order of position, redacted.

    Percent-encoded runs (URLs, query strings, form bodies) are decoded once and searched
    too, all in one search. With ``decoded``, the base64 and hex blobs that
    :func:`~.normalize.decoded_blobs` would decode are searched too: a secret inside one
    is reported with the blob's span (``[base64: AKIA…]``), so that
    :func:`redact_secrets` hides the whole blob.
    The work is linear in the length of ``text`` (``bench/guard_hostile.py``).
    """
    text = text[:MAX_SECRET_SCAN]
    found = _find(text)
    if "%" in text:
        _percent_encoded(text, found)
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
