"""Path signature lists: files of sensitive or scanner paths, matched in O(1)-ish.

File format, one pattern a line; ``#`` starts a comment, blank lines are ignored:

* ``/.env`` - the exact path (after :func:`path_views`: a path matches when its
  decoded view or its view with ``..`` resolved does, so ``/%2eenv``, ``/a/../.env``
  and ``GET http://host/.env`` match it too);
* ``/phpmyadmin*`` - any path starting with ``/phpmyadmin`` (``*`` at the end);
* ``*.sql`` - any path ending with ``.sql`` (``*`` at the start).

Patterns are normalised like paths (lower case, no trailing slash), so matching is
case-insensitive. Matching never loops over the whole list: one set lookup for
exact paths, and prefixes / suffixes are bucketed by their first four / last
three characters, so a path is compared only with the few patterns sharing those.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Generic, TypeVar

from aisentinel.rules.normalise import normalise_target

_PREFIX_KEY = 4
_SUFFIX_KEY = 3

V = TypeVar("V")

VERDICT_CACHE_LIMIT = 4096
"""Raw paths a :class:`VerdictCache` remembers before it starts afresh."""

BUILTIN_SENSITIVE_PATHS = "sensitive_paths.txt"

DEFAULT_AI_PATHS = (
    "/api/generate",
    "/api/chat",
    "/api/embed",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
    "/v1/audio/",
    "/v1/images/",
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/pooling",
    "/classify",
    "/score",
    "/ollama/api/generate",
    "/ollama/api/chat",
    "/ollama/api/embed",
    "/ollama/v1/",
    "/openai/chat/completions",
    "/api/chat/completions",
    "/api/v1/chat/completions",
)
"""Path prefixes of inference endpoints (Ollama, OpenAI-compatible/vLLM, Open WebUI)."""
"""The list shipped in ``aisentinel/data``."""


_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*")
"""The ``scheme://host`` of an absolute-form request target (``GET http://h/x``),
which nginx serves as ``/x``."""


def plain_path(path: str) -> bool:
    """Whether :func:`normalise_path` leaves ``path`` as it is but for its case, query
    and trailing ``/``: it starts with ``/`` and has no escape (``%``, nginx's ``\\x``),
    dot segment, ``;`` parameter or doubled ``/``."""
    return (
        path[:1] == "/"
        and "%" not in path
        and "\\" not in path
        and "/." not in path
        and "//" not in path
        and ";" not in path
    )


def path_views(path: str) -> tuple[str, str]:
    """``path`` as the server routes it, twice: ``(decoded, resolved)``.

    Both have no ``scheme://host`` (an absolute-form target, which nginx serves as its
    path), query or fragment, have percent and nginx log escapes decoded, are
    lower-cased, have ``//`` and ``.`` segments collapsed and no trailing ``/``.
    ``resolved`` also has ``..`` resolved and ``;parameters`` dropped (nginx's own
    view for its locations and files); ``decoded`` keeps them (what a backend behind
    ``proxy_pass`` without a URI gets: ``/api/blobs/sha256:../../etc/passwd`` is still a
    blob call). Go (Ollama's router) and uvicorn (vLLM) route on the decoded path, so
    ``/api/%70ull`` is ``/api/pull`` to them. The decoding is
    :func:`~aisentinel.rules.normalise.normalise_target`'s, the rules' canonical form;
    a plain path takes a shorter way to the same result."""
    if path[:1] != "/":
        absolute = _ABSOLUTE.match(path)
        if absolute is not None:
            path = path[absolute.end() :] or "/"
    cut = path.find("?")
    if cut >= 0:
        path = path[:cut]
    cut = path.find("#")
    if cut >= 0:
        path = path[:cut]
    if plain_path(path):
        path = path.lower()
        if len(path) > 1 and path[-1] == "/":
            path = path.rstrip("/") or "/"
        return path, path
    target = normalise_target(path)
    decoded = target.uri
    if len(decoded) > 1 and decoded[-1] == "/":
        decoded = decoded.rstrip("/") or "/"
    return decoded, target.path


def normalise_path(path: str) -> str:
    """The decoded view of ``path`` (see :func:`path_views`)."""
    return path_views(path)[0]


class VerdictCache(Generic[V]):
    """Remembers ``test(path)`` per raw path, so a hot loop pays one dict lookup.

    Requests mostly repeat a few hundred paths; a flood of distinct paths only
    makes the cache start afresh every :data:`VERDICT_CACHE_LIMIT` entries. Hot
    loops bind ``cache.get`` and call ``cache.fill(path)`` on a miss. A verdict is
    any value but ``None`` (a bool, a bit mask).
    """

    __slots__ = ("_data", "_test", "get")

    def __init__(self, test: Callable[[str], V]) -> None:
        self._test = test
        self._data: dict[str, V] = {}
        self.get = self._data.get

    def fill(self, path: str) -> V:
        """Compute, remember and return the verdict for ``path``."""
        verdict = self._test(path)
        data = self._data
        if len(data) >= VERDICT_CACHE_LIMIT:
            data.clear()
        data[path] = verdict
        return verdict

    def clear(self) -> None:
        """Forget every verdict (the test changed)."""
        self._data.clear()

    def __call__(self, path: str) -> V:
        verdict = self._data.get(path)
        return self.fill(path) if verdict is None else verdict


class PrefixMatcher:
    """Case-sensitive "starts with one of these" on raw paths, bucketed by the first
    four characters so that a path is compared with a handful of prefixes at most."""

    __slots__ = ("_buckets", "_short")

    def __init__(self, prefixes: Iterable[str]) -> None:
        buckets: dict[str, list[str]] = {}
        short: list[str] = []
        for prefix in prefixes:
            if not prefix:
                raise ValueError("an empty prefix would match every path")
            if len(prefix) >= _PREFIX_KEY:
                buckets.setdefault(prefix[:_PREFIX_KEY], []).append(prefix)
            else:
                short.append(prefix)
        self._buckets = {key: tuple(group) for key, group in buckets.items()}
        self._short = tuple(short)

    def match(self, path: str) -> bool:
        """Whether ``path``, as logged or else as :func:`normalise_path` gives it (an
        escaped or absolute-form target), starts with one of the prefixes."""
        if self._starts(path):
            return True
        if plain_path(path):
            return False
        decoded, resolved = path_views(path)
        return self._starts(decoded) or (resolved != decoded and self._starts(resolved))

    def _starts(self, path: str) -> bool:
        group = self._buckets.get(path[:_PREFIX_KEY])
        if group is not None and path.startswith(group):
            return True
        return bool(self._short) and path.startswith(self._short)


class PathSignatures:
    """A compiled set of exact, prefix and suffix path patterns."""

    __slots__ = (
        "_exact",
        "_heads",
        "_prefixes",
        "_short_prefixes",
        "_short_suffixes",
        "_suffixes",
    )

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self._exact: set[str] = set()
        prefixes: dict[str, list[str]] = {}
        suffixes: dict[str, list[str]] = {}
        short_prefixes: list[str] = []
        short_suffixes: list[str] = []
        for raw in patterns:
            pattern = raw.strip()
            if not pattern:
                continue
            if pattern.endswith("*") and not pattern.startswith("*"):
                body = pattern[:-1].lower()
                if len(body) >= _PREFIX_KEY:
                    prefixes.setdefault(body[:_PREFIX_KEY], []).append(body)
                else:
                    short_prefixes.append(body)
            elif pattern.startswith("*") and not pattern.endswith("*"):
                body = pattern[1:].lower()
                if len(body) >= _SUFFIX_KEY:
                    suffixes.setdefault(body[-_SUFFIX_KEY:], []).append(body)
                else:
                    short_suffixes.append(body)
            elif "*" in pattern:
                raise ValueError(f"bad path pattern {raw!r}: '*' only at the start or the end")
            elif not pattern.startswith("/"):
                raise ValueError(f"bad path pattern {raw!r}: a path starts with '/'")
            else:
                self._exact.add(normalise_path(pattern))
        self._prefixes = {key: tuple(group) for key, group in prefixes.items()}
        self._suffixes = {key: tuple(group) for key, group in suffixes.items()}
        self._short_prefixes = tuple(p for p in short_prefixes if p)
        self._short_suffixes = tuple(s for s in short_suffixes if s)
        # Fast rejection on the first four characters of a raw path, possible when
        # every pattern is anchored at the start and longer than four characters.
        self._heads: frozenset[str] | None = None
        if (
            not self._suffixes
            and not self._short_suffixes
            and not self._short_prefixes
            and all(len(p) > _PREFIX_KEY for p in self._exact)
        ):
            self._heads = frozenset({p[:_PREFIX_KEY] for p in self._exact} | set(self._prefixes))

    def __len__(self) -> int:
        return (
            len(self._exact)
            + sum(map(len, self._prefixes.values()))
            + sum(map(len, self._suffixes.values()))
            + len(self._short_prefixes)
            + len(self._short_suffixes)
        )

    def match_normalised(self, path: str) -> bool:
        """Whether an already normalised path matches a pattern."""
        if path in self._exact:
            return True
        group = self._prefixes.get(path[:_PREFIX_KEY])
        if group is not None and path.startswith(group):
            return True
        group = self._suffixes.get(path[-_SUFFIX_KEY:])
        if group is not None and path.endswith(group):
            return True
        if self._short_prefixes and path.startswith(self._short_prefixes):
            return True
        return bool(self._short_suffixes) and path.endswith(self._short_suffixes)

    def match(self, path: str) -> bool:
        """Whether a raw request path (query allowed) matches a pattern."""
        heads = self._heads
        if heads is not None:
            head = path[:_PREFIX_KEY]
            if (
                "?" not in head
                and "#" not in head
                and head.lower() not in heads
                and plain_path(path)
            ):
                return False
        decoded, resolved = path_views(path)
        match = self.match_normalised
        return match(decoded) or (resolved != decoded and match(resolved))


def parse_patterns(text: str, origin: str) -> list[str]:
    """Patterns from file text; ``ValueError`` names ``origin`` and the line."""
    patterns: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        pattern = line.split("#", 1)[0].strip()
        if not pattern:
            continue
        try:
            PathSignatures([pattern])
        except ValueError as exc:
            raise ValueError(f"{origin}:{number}: {exc}") from None
        patterns.append(pattern)
    return patterns


def builtin_patterns(name: str = BUILTIN_SENSITIVE_PATHS) -> list[str]:
    """Patterns of a list shipped in ``aisentinel/data``."""
    text = resources.files("aisentinel").joinpath("data", name).read_text(encoding="utf-8")
    return parse_patterns(text, f"aisentinel/data/{name}")


def load_signatures(
    extra_files: Iterable[str | Path] = (), *, builtin: bool = True
) -> PathSignatures:
    """The shipped sensitive-path list plus ``extra_files``.

    A missing or unreadable file raises ``OSError``; a bad pattern ``ValueError``
    naming the file and line.
    """
    patterns = builtin_patterns() if builtin else []
    for file in extra_files:
        path = Path(file)
        patterns.extend(parse_patterns(path.read_text(encoding="utf-8"), str(path)))
    return PathSignatures(patterns)
