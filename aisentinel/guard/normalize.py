"""Text normalisation before scoring: undo the cheap obfuscations attackers use.

Every step is a C-level string operation (``unicodedata.normalize``, ``str.translate``,
compiled regexes); only tokens that actually contain leetspeak or letter-spacing, and
words that carry combining marks, reach a Python callback. The result is lower case with
single spaces, so rules and n-grams see
``IGNORE  previous``, ``ignоre previous`` (Cyrillic ``о``), ``ig\u200bnore previous``,
``ig\ufe00nore`` (variation selectors and every other invisible character),
``i\u0336g\u0336nore`` (a combining mark on every letter of a word, any mark: the
marks are dropped; ordinary accented writing, ``dẫn`` or ``précédentes``, keeps them),
``ɪɢɴᴏʀᴇ`` (small capitals), ``1gn0r3 pr3v10us`` and ``i g n o r e previous`` as the
same text.

Encoded blobs (base64, hex) are not decoded in place: :func:`decoded_blobs` returns the
plausible decodings, and the scorer scores each as a text of its own.

Unicode tag characters (U+E0020-E007E, "ASCII smuggling": each one a printable ASCII
character that renders as nothing and that models read) are invisible like the rest,
but an instruction written in them is not lost: when a text holds at least
:data:`TAG_TEXT_MIN` of them outside emoji flag tag sequences (U+1F3F4, at most seven
tags, U+E007F: the flags of England, Scotland, Wales), :func:`normalize` puts the marker
:data:`HIDDEN_TAGS` where the first run was (a rule family of its own: such text has no
ordinary use) and :func:`tag_view` gives the text with them decoded in place, scored as
a view of its own. A lone tag inserted in a word is dropped as before.
"""
# ruff: noqa: RUF001, RUF002

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

__all__ = [
    "HIDDEN_TAGS",
    "MAX_BLOBS",
    "MAX_BLOB_TEXT",
    "TAG_TEXT_MIN",
    "blob_spans",
    "decoded_blobs",
    "escape_snippet",
    "normalize",
    "tag_view",
]


def _code_points(*categories: str) -> list[int]:
    """The code points of the given Unicode general categories. Planes 0, 1 and 14 are
    the only ones that hold marks or format characters (a test checks every plane):
    a fifth of the time of all seventeen, at import."""
    cat = unicodedata.category
    return [
        c
        for span in (range(0x20000), range(0xE0000, 0xE1000))
        for c in span
        if cat(chr(c)) in categories
    ]


# Invisible characters, dropped everywhere: every format character (category Cf: zero
# width space and joiners, bidi controls, soft hyphen, tags used for "ASCII smuggling",
# interlinear annotation, musical beam controls...) and Unicode's other default-ignorable
# code points (variation selectors, Mongolian free variation selectors, the combining
# grapheme joiner, Hangul fillers, Khmer inherent vowels), which are marks or letters by
# category. Joiners go too: in an emoji sequence they change nothing a rule reads.
_INVISIBLE = dict.fromkeys(
    [
        *_code_points("Cf"),
        0x034F,
        0x115F,
        0x1160,
        0x17B4,
        0x17B5,
        *range(0x180B, 0x1810),
        0x3164,
        *range(0xFE00, 0xFE10),  # variation selectors 1-16
        0xFFA0,
        *range(0xE0100, 0xE01F0),  # variation selectors 17-256
    ]
)

# Cyrillic, Greek and Armenian letters that look like Latin ones (a subset of Unicode's
# confusables.txt: the letters that render identically in common fonts).
_CONFUSABLE_PAIRS = {
    # Cyrillic lower case
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i",
    "ј": "j", "ԁ": "d", "ӏ": "l", "ԛ": "q", "ԝ": "w", "һ": "h", "ь": "b", "ɡ": "g",
    # Cyrillic upper case
    "А": "a", "В": "b", "Е": "e", "Ё": "e", "К": "k", "М": "m", "Н": "h", "О": "o",
    "Р": "p", "С": "c", "Т": "t", "У": "y", "Х": "x", "Ѕ": "s", "І": "i", "Ї": "i",
    "Ј": "j", "Ԛ": "q", "Ԝ": "w", "Һ": "h",
    # Greek
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m",
    "Ν": "n", "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    # Armenian
    "օ": "o", "ո": "n", "հ": "h", "ս": "u", "ց": "g", "զ": "q", "Օ": "o", "Ս": "u",
    # Latin lookalikes outside ASCII
    "ı": "i", "ȷ": "j", "ℓ": "l",
    # Small capitals (IPA and phonetic letters NFKC leaves alone: "ɪɢɴᴏʀᴇ")
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ꜰ": "f", "ɢ": "g", "ʜ": "h",
    "ɪ": "i", "ᴊ": "j", "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p",
    "ꞯ": "q", "ʀ": "r", "ꜱ": "s", "ᴛ": "t", "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y",
    "ᴢ": "z",
}  # fmt: skip

_TABLE: dict[int, int | str | None] = {ord(k): v for k, v in _CONFUSABLE_PAIRS.items()}
_TABLE.update(dict.fromkeys(_INVISIBLE))

# Combining marks (categories Mn and Me, every script) that are not invisible. Ordinary
# writing puts them on some letters of a word (Vietnamese "dẫn", French "précédentes",
# Hebrew points, Devanagari vowel signs): kept. Obfuscation puts one on every letter
# ("i̶g̶n̶o̶r̶e̶", "Zalgo") so that no n-gram matches: a word (a run without spaces)
# of at least two letters or digits, at least 3 in 4 of them carrying a mark, loses
# its marks.
_MARK_CODES = [c for c in _code_points("Mn", "Me") if c not in _INVISIBLE]
_MARK_SET = frozenset(map(chr, _MARK_CODES))
_UNMARK: dict[int, int | str | None] = dict.fromkeys(_MARK_CODES)


def _char_class(codes: list[int]) -> str:
    """A regex character class body for sorted ``codes``, as ranges."""
    parts: list[str] = []
    start = prev = codes[0]
    for code in [*codes[1:], -1]:
        if code != prev + 1:
            lo, hi = re.escape(chr(start)), re.escape(chr(prev))
            parts.append(lo if start == prev else f"{lo}-{hi}")
            start = code
        prev = code
    return "".join(parts)


_HAS_MARK = re.compile(f"[{_char_class(_MARK_CODES)}]")
# The marks all read as NUL in a shadow of the text (same length), where a small regex
# finds the words in which two letters in a row carry a mark (any word with 3 in 4 of two
# or more letters marked has such a pair; "précédentes" has none and is never looked
# at): taken whole from the word's start, in linear time.
_SHADOW: dict[int, int | str | None] = dict.fromkeys(_MARK_CODES, "\x00")
_MARKED_WORD = re.compile(r"(?<!\S)(?=\S*?[^\s\x00]\x00++[^\s\x00]\x00)\S++")

_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s", "|": "l"}
)
# A token of letters mixed with leet digits/symbols ("1gn0r3", "pr3v10us", "@ccess"): it
# holds a letter (the lookahead) and is taken whole (possessive). Written as
# ``[a-z0-9@$|]*[a-z][a-z0-9@$|]*`` it was quadratic in a long run of letters that the
# final lookahead refuses ("aaa...a_" with a digit elsewhere): every split tried.
_LEET_TOKEN = re.compile(r"(?<![\w@$|])(?=[0-9@$|]*[a-z])[a-z0-9@$|]++(?![\w@$|])")
_HAS_LEET = re.compile(r"[0-9@$|]")
# Four or more single letters separated by one space/dot/dash/underscore/asterisk.
_SPACED = re.compile(r"(?<![a-z])(?:[a-z][ .\-_*]){3,}[a-z](?![a-z])")
# Every such run holds separator, letter, separator, letter, separator (its second and
# third letters): a search that starts only at separators, to skip most texts cheaply.
_SPACED_HINT = re.compile(r"[ .\-_*][a-z][ .\-_*][a-z][ .\-_*]")
_SEPARATORS = str.maketrans("", "", " .-_*")

#: Most blobs decoded per text (distinct decodings; a repeat is skipped free), and
#: most decoded characters in all: a budget, so harmless decoy blobs put first cannot
#: use it up before the one that matters (a cap of four could, up to 0.11).
MAX_BLOBS = 64
MAX_BLOB_TEXT = 65_536
_MAX_BLOB_CHARS = 16_384
_B64 = re.compile(r"[A-Za-z0-9+/\-_]{20,}={0,2}")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2}[ :]?){12,}")


#: Tag characters outside emoji flags from which a text hides text (more than eight:
#: a flag has at most seven, and nothing else uses them).
TAG_TEXT_MIN = 9
#: What :func:`normalize` puts where hidden tag text was (rule family ``hidden_tags``).
HIDDEN_TAGS = "⟦hidden tag text⟧"
_TAG_RUN = re.compile("[\U000e0020-\U000e007e]+")
_TAG_ASCII: dict[int, int | str | None] = {c: c - 0xE0000 for c in range(0xE0020, 0xE007F)}


def _hidden_tag_runs(text: str) -> list[re.Match[str]]:
    """The runs of tag characters in ``text`` that are not an emoji flag's tags (U+1F3F4,
    one to seven tags, U+E007F); none unless they hold :data:`TAG_TEXT_MIN` in all."""
    runs: list[re.Match[str]] = []
    total = 0
    for run in _TAG_RUN.finditer(text):
        start, end = run.span()
        if (
            end - start <= 7
            and text[start - 1 : start] == "\U0001f3f4"
            and text[end : end + 1] == "\U000e007f"
        ):
            continue  # a subdivision flag
        runs.append(run)
        total += end - start
    return runs if total >= TAG_TEXT_MIN else []


def tag_view(text: str) -> str | None:
    """``text`` with its hidden tag text (see the module doc) decoded in place, after
    :data:`HIDDEN_TAGS`; ``None`` when it holds none. Emoji flags are left as they are."""
    if text.isascii():
        return None
    runs = _hidden_tag_runs(text)
    if not runs:
        return None
    parts = [text[: runs[0].start()], f" {HIDDEN_TAGS} "]
    done = runs[0].start()
    for run in runs:
        parts += (text[done : run.start()], run.group().translate(_TAG_ASCII))
        done = run.end()
    parts.append(text[done:])
    return "".join(parts)


def _unleet(match: re.Match[str]) -> str:
    token = match.group()
    if _HAS_LEET.search(token) is None:
        return token
    letters = sum(c.isalpha() for c in token)
    # Leave numbers with a unit ("10gb", "gpt4", "v1") alone: leetspeak replaces
    # letters inside a word, so the token must be mostly letters around the digits.
    if letters < 2 or letters * 2 < len(token) - 1:
        return token
    return token.translate(_LEET)


def _unmark_words(text: str) -> str | None:
    """``text`` (decomposed) with the marks of its obfuscated words dropped: a word whose
    two or more letters and digits carry a mark at least 3 in 4 times; ``None`` when no
    word is."""
    shadow = text.translate(_SHADOW)
    parts: list[str] = []
    done = 0
    for match in _MARKED_WORD.finditer(shadow):
        start, end = match.span()
        word = text[start:end]
        bases = marked = 0
        after_base = False
        for ch in word:
            if ch in _MARK_SET:
                if after_base:
                    marked += 1
                    after_base = False
            else:
                after_base = ch.isalnum()
                bases += after_base
        if bases >= 2 and marked * 4 >= bases * 3:
            parts += (text[done:start], word.translate(_UNMARK))
            done = end
    if not parts:
        return None
    parts.append(text[done:])
    return "".join(parts)


def _unspace(match: re.Match[str]) -> str:
    return match.group().translate(_SEPARATORS)


def normalize(text: str) -> str:
    """Lower-case, de-obfuscated, single-spaced form of ``text`` (see module docstring)."""
    if text.isascii():  # NFKC and the lookalike table change no ASCII character
        text = text.lower()
    else:
        runs = _hidden_tag_runs(text)
        if runs:  # hidden tag text: dropped (like every invisible), its place marked
            at = runs[0].start()
            text = f"{text[:at]} {HIDDEN_TAGS} {text[at:]}"
        # NFKC, lookalikes to Latin and invisibles dropped; then, decomposed, the marks
        # of obfuscated words dropped (and the letters they hid mapped in turn).
        text = unicodedata.normalize("NFKC", text).translate(_TABLE)
        split = unicodedata.normalize("NFD", text)
        if _HAS_MARK.search(split) is not None:
            unmarked = _unmark_words(split)
            if unmarked is not None:
                text = unicodedata.normalize("NFC", unmarked).translate(_TABLE)
        text = text.casefold()
    if _HAS_LEET.search(text) is not None:
        text = _LEET_TOKEN.sub(_unleet, text)
    if _SPACED_HINT.search(text) is not None:
        text = _SPACED.sub(_unspace, text)
    # str.split() and the regex \s agree on what whitespace is (Py_UNICODE_ISSPACE).
    return " ".join(text.split())


def _printable_ratio(text: str) -> float:
    if not text:
        return 0.0
    good = sum(1 for c in text if c.isprintable() or c in "\n\t\r")
    return good / len(text)


def _plausible(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 8 or _printable_ratio(text) < 0.9:
        return None
    # Decoded natural language has letters and spaces; random bytes that happen to be
    # valid UTF-8 rarely do.
    letters = sum(1 for c in text if c.isalpha())
    if letters < len(text) * 0.5 or " " not in text:
        return None
    return text


def _b64_text(blob: str) -> str | None:
    """The plausible text a base64 blob decodes to, or ``None``."""
    if len(blob) > _MAX_BLOB_CHARS or blob.isalpha() or blob.isdigit():
        return None
    body = blob.rstrip("=")
    padded = body + "=" * (-len(body) % 4)
    try:
        if "-" in body or "_" in body:
            raw = base64.urlsafe_b64decode(padded)
        else:
            raw = base64.b64decode(padded, validate=True)
    except (binascii.Error, ValueError):
        return None
    return _plausible(raw)


def decoded_blobs(text: str) -> list[tuple[str, str]]:
    """Plausible decodings of base64 and hex blobs in ``text``: ``(kind, decoded)`` pairs.

    A blob counts when it decodes to UTF-8 text that is mostly printable letters and
    contains a space; blobs over 16 KiB are skipped, and the same decoding twice is kept
    once. At most :data:`MAX_BLOBS` decodings, :data:`MAX_BLOB_TEXT` characters in all,
    are kept, in the order of the text (base64 first, then hex).
    """
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for kind, _start, _end, decoded in blob_spans(text):
        if decoded not in seen:
            seen.add(decoded)
            out.append((kind, decoded))
    return out


def blob_spans(text: str) -> list[tuple[str, int, int, str]]:
    """:func:`decoded_blobs` with where each blob is: ``(kind, start, end, decoded)``;
    a blob that decodes the same as an earlier one is listed too (it costs no budget)."""
    found: list[tuple[str, int, int, str]] = []
    budget = _Budget()
    known: dict[str, str | None] = {}  # a blob repeated is decoded once
    for match in _B64.finditer(text):
        blob = match.group()
        if blob in known:
            decoded = known[blob]
        else:
            decoded = known[blob] = _b64_text(blob)
        if decoded is not None and budget.take(decoded):
            found.append(("base64", match.start(), match.end(), decoded))
            if budget.spent:
                return found
    # Plausible text has a space, byte 0x20, written "20" in the blob: no "20", no need
    # to look for hex blobs.
    for match in _HEX.finditer(text) if "20" in text else ():
        blob = match.group().replace(" ", "").replace(":", "")
        if len(blob) > _MAX_BLOB_CHARS:
            continue
        try:
            raw = bytes.fromhex(blob[: len(blob) // 2 * 2])
        except ValueError:
            continue
        decoded = _plausible(raw)
        if decoded is not None and budget.take(decoded):
            found.append(("hex", match.start(), match.end(), decoded))
            if budget.spent:
                break
    return found


class _Budget:
    """The decodings kept so far: their count, their characters, and which they are."""

    __slots__ = ("chars", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.chars = 0

    def take(self, decoded: str) -> bool:
        """Whether ``decoded`` is kept: a repeat (free), or new and within the budget
        (then counted)."""
        if decoded in self.seen:
            return True
        if self.chars + len(decoded) > MAX_BLOB_TEXT:
            return False
        self.seen.add(decoded)
        self.chars += len(decoded)
        return True

    @property
    def spent(self) -> bool:
        return len(self.seen) >= MAX_BLOBS or self.chars >= MAX_BLOB_TEXT


def escape_snippet(text: str, limit: int = 160) -> str:
    """``text`` cut to ``limit`` characters with control and invisible characters escaped.

    Safe to put in a log line or a terminal: newlines, ANSI escapes, bidi overrides and
    zero-width characters come out as ``\\n``, ``\\x1b``, ``\\u202e``...
    """
    cut = text[:limit]
    suffix = "…" if len(text) > limit else ""
    if cut.isprintable() and "\\" not in cut:
        return cut + suffix
    out = []
    for ch in cut:
        if ch.isprintable() and ch != "\\":
            out.append(ch)
        elif ch == "\\":
            out.append("\\\\")
        else:
            out.append(ch.encode("unicode_escape").decode("ascii"))
    return "".join(out) + suffix
