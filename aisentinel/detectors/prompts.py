"""What ``prompt_injection`` and ``prompt_secrets`` share: which requests carry a prompt,
and each body's prompt text, extracted once.

A request is looked at only when it has a body (``HttpRequest.body``: the ``aisentinel``
JSON log format with ``request_body``, see docs/nginx-log-format.md) and its path matches
the detector's ``paths`` (the AI APIs by default). Most access-log lines have no body:
they cost one field test.

:class:`PromptMemo` keeps, for the batch the pipeline is handing out, each body's
:class:`PromptFacts`: the texts :func:`~aisentinel.guard.extract_prompt` keeps, split
into the system text and the client's turns (:class:`PromptUnit`, what
``prompt_injection`` scores one by one), and the secrets in the system text and the
last turn and in the base64/hex blobs they hold (:func:`~aisentinel.guard.find_secrets`,
what ``prompt_secrets`` reports). Both detectors get the same facts object for the same
body, computed by whichever asked first. :func:`request_line` is the request as the
evidence of both shows it, with no secret of the query string.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, NamedTuple, cast

from pydantic import Field, field_validator

from aisentinel.detectors.base import DetectorConfigBase
from aisentinel.detectors.common import all_requests
from aisentinel.detectors.paths import PathSignatures, VerdictCache
from aisentinel.events import Event, HttpRequest
from aisentinel.guard.bodies import MAX_BODY_CHARS, MAX_PARTS, extract_prompt
from aisentinel.guard.secrets import SecretFinding, find_secrets, redact_secrets

DEFAULT_PROMPT_PATHS = (
    "*/chat/completions",
    "*/completions",
    "*/responses",
    "*/embeddings",
    "*/api/generate",
    "*/api/chat",
)
"""The OpenAI-style and Ollama endpoints whose bodies hold prompts, under any prefix
(``/v1/...``, ``/openai/v1/...``, ``/ollama/api/...``), in :mod:`~.paths` syntax."""

BodyChars = Annotated[int, Field(ge=1024, le=4_194_304)]
"""Most characters of a body read: 1024-4194304."""
BodyParts = Annotated[int, Field(ge=1, le=10_000)]
"""Most texts kept from a body: 1-10000."""


class PromptDetectorConfig(DetectorConfigBase):
    """Keys both prompt detectors have."""

    paths: tuple[str, ...] = DEFAULT_PROMPT_PATHS
    """Request paths whose bodies are read (``/exact``, ``/prefix*``, ``*suffix``)."""
    max_body_chars: BodyChars = MAX_BODY_CHARS
    """Most characters of prompt text kept from a body, the last turn first. The body
    itself is parsed whole up to :data:`~aisentinel.guard.bodies.MAX_PARSE_CHARS` (1 Mi)
    characters, or this many if larger; a longer one is cut and read leniently."""
    max_parts: BodyParts = MAX_PARTS
    """Most message contents / prompt texts kept from one body."""

    @field_validator("paths")
    @classmethod
    def _patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        PathSignatures(patterns)
        return patterns


class PromptUnit(NamedTuple):
    """One text of a body that ``prompt_injection`` scores on its own."""

    kind: str
    """``system`` (the system/developer texts, joined), ``turn`` (the client's last
    turn) or ``history`` (an earlier turn the client sent again, or wrote itself)."""
    text: str
    own: str | None = None
    """``text`` without quoted data (tool results, fenced code: see
    :attr:`~aisentinel.guard.PromptBody.own_text`); ``None`` when it has none.
    Only what the client wrote counts towards ``prompt_injection``'s abuse."""


class PromptFacts(NamedTuple):
    """One body's prompt: its units, the secrets of its new text, that text redacted."""

    text: str
    """The system texts and the last turn, joined by newlines: what ``prompt_secrets``
    reads (earlier turns were read when they were new: a chat client re-sends them)."""
    secrets: tuple[SecretFinding, ...]
    redacted: str
    """``text`` with each secret replaced by its redacted form (``text`` itself when it
    has none)."""
    truncated: bool
    units: tuple[PromptUnit, ...] = ()
    """The system text first (when there is one), then each turn, oldest first."""


_NO_PROMPT = PromptFacts("", (), "", False)


class PromptMemo:
    """Each body's :class:`PromptFacts`, for the batch being handed out (see module doc).

    Facts are kept per event index for the last batch object asked about; a new batch
    (or a detector's ``observe`` of one event) starts afresh. An entry is reused only
    when it was made from the same body object with the same limits.
    """

    __slots__ = ("_batch", "_facts", "_size")

    def __init__(self) -> None:
        self._batch: Sequence[Event] | None = None
        self._size = -1
        self._facts: dict[int, tuple[str, int, int, PromptFacts]] = {}

    def get(
        self, events: Sequence[Event], index: int, body: str, cfg: PromptDetectorConfig
    ) -> PromptFacts:
        if events is not self._batch or len(events) != self._size:
            self._batch = events
            self._size = len(events)
            self._facts = {}
        held = self._facts.get(index)
        if (
            held is not None
            and held[0] is body
            and held[1] == cfg.max_body_chars
            and held[2] == cfg.max_parts
        ):
            return held[3]
        event = events[index]
        path = event.path if isinstance(event, HttpRequest) else ""
        facts = prompt_facts(body, cfg.max_body_chars, cfg.max_parts, path)
        self._facts[index] = (body, cfg.max_body_chars, cfg.max_parts, facts)
        return facts


def prompt_facts(body: str, max_chars: int, max_parts: int, path: str = "") -> PromptFacts:
    """Extract the prompt of ``body`` (a request to ``path``), split it into units, find
    the secrets of its system text and last turn and redact them."""
    prompt = extract_prompt(body, max_chars=max_chars, max_parts=max_parts, path=path)
    if not prompt.parts:
        return _NO_PROMPT
    system, turns = prompt.split()
    units: list[PromptUnit] = []
    if system.parts:
        units.append(PromptUnit("system", system.text))
    for n, turn in enumerate(turns, 1):
        text, own = turn.text, turn.own_text
        units.append(
            PromptUnit("turn" if n == len(turns) else "history", text, None if own == text else own)
        )
    new = [unit.text for unit in units if unit.kind != "history"]
    text = "\n".join(new)
    found = find_secrets(text, decoded=True)
    redacted = redact_secrets(text, found) if found else text
    return PromptFacts(text, tuple(found), redacted, prompt.truncated, tuple(units))


_MAX_PATH = 200


def request_line(request: HttpRequest) -> str:
    """``METHOD path`` for a finding's evidence: the path with any secret in it redacted,
    then cut to 200 characters (cut first, a key straddling the cut would not be
    recognised and its first part would show), and the query string left out (its
    length said instead): a client may send its API key as ``?api_key=`` or ``?key=``,
    and evidence goes to logs, the ledger and notifications."""
    path, sep, query = request.path.partition("?")
    path = redact_secrets(path)[:_MAX_PATH]
    if sep:
        path = f"{path}?[query: {len(query)} chars]"
    return f"{request.method} {path}"


MEMO = PromptMemo()
"""The one memo the prompt detectors share (the pipeline runs them from one thread)."""


_BODY = HttpRequest._fields.index("body")
"""Where ``body`` sits in a request (looked up by name once, read by index per request)."""


class _BodyIndex:
    """The indexes of a batch's requests that carry a body, worked out once per batch
    for every prompt detector (the pipeline hands them the same event list)."""

    __slots__ = ("_events", "_with_body")

    def __init__(self) -> None:
        self._events: Sequence[Event] | None = None
        self._with_body: list[int] = []

    def of(self, events: Sequence[Event]) -> list[int]:
        if events is not self._events:
            if all_requests(events):
                body = _BODY
                reqs = cast("Sequence[HttpRequest]", events)
                with_body = [i for i, r in enumerate(reqs) if r[body]]
            else:
                with_body = [
                    i for i, e in enumerate(events) if isinstance(e, HttpRequest) and e.body
                ]
            self._events, self._with_body = events, with_body
        return self._with_body


_BODIES = _BodyIndex()


class PromptRequests:
    """Picks the requests of a batch that carry a body on one of ``paths``."""

    __slots__ = ("_verdicts",)

    def __init__(self, paths: Sequence[str]) -> None:
        self._verdicts = VerdictCache(PathSignatures(paths).match)

    def pick(self, events: Sequence[Event]) -> list[tuple[int, HttpRequest, str]]:
        """``(index, request, body)`` of the requests with a body on a prompt path."""
        with_body = _BODIES.of(events)
        requests = cast("Sequence[HttpRequest]", events)
        if not with_body:
            return []
        verdict = self._verdicts
        out: list[tuple[int, HttpRequest, str]] = []
        for i in with_body:
            request = requests[i]
            if request.body and verdict(request.path):
                out.append((i, request, request.body))
        return out
