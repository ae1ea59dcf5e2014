"""The prompt text of an AI API request body: what :func:`~aisentinel.guard.scan` should see.

:func:`extract_prompt` reads the request bodies of the OpenAI-style API
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``, ``/v1/embeddings``)
and of Ollama (``/api/generate``, ``/api/chat``). The shape is told by the body's keys,
not the path, so the same code serves proxies that mount the APIs elsewhere. It keeps
the text a client controls:

* ``messages`` (chat, both APIs): the content of every message but the ``assistant``
  ones: ``system`` / ``developer`` messages, user text and tool results, earlier turns
  included (a client of a stateless API writes the whole history itself, so an earlier
  turn may never have been sent as a new one). Assistant text is the model's own
  output, which a chat client sends back each turn, and is left out; each assistant
  message ends a *turn* (see :meth:`PromptBody.split`). Content may be a string or an
  array of parts (``{"type": "text", "text": ...}``, ``input_text``, nested
  ``content``); images and other parts are skipped.
* ``prompt`` and ``suffix`` (completions, generate; a string or a list of strings),
  ``system`` (Ollama's system override), ``instructions`` and ``input`` (responses:
  a string or a list of items, ``function_call_output`` included; embeddings: a string
  or a list of strings).

Bodies that are not valid JSON are tolerated: bodies cut short (a full log buffer, a
client that hung up) give the string values of the keys above that were written, up to
the cut; bodies escaped by nginx's default log escaping (``\\x22`` for ``"``) or
JSON-encoded twice are unescaped first; anything else is scanned as raw text. The work
is bounded: at most ``max_chars`` characters of the body are read, at most
``max_parts`` texts kept, and the texts kept add up to at most ``max_chars``
characters (``PromptBody.truncated`` says when something was cut). When a body has
more, the last turn is kept first, then the system texts, then the earlier turns,
newest first.

Pure standard library, like the rest of :mod:`aisentinel.guard`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_BODY_CHARS", "MAX_PARTS", "PromptBody", "extract_prompt"]

#: Most characters of a body that are read (a longer body is cut, then read leniently).
MAX_BODY_CHARS = 262_144
#: Most texts (message contents, prompts, parts) kept from one body.
MAX_PARTS = 256

_TEXT_KEYS = ("system", "instructions", "prompt", "suffix", "input")
_SYSTEM_ROLES = frozenset({"system", "developer"})
_SYSTEM_KEYS = frozenset({"system", "instructions"})
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# A JSON string value of a key that carries prompt text, possibly cut off at the end.
_LENIENT = re.compile(
    r'"(content|text|prompt|suffix|system|instructions|input|output)"\s*:\s*'
    r'"([^"\\]*(?:\\.[^"\\]*)*)("?)',
    re.DOTALL,
)
_NGINX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
# A fenced code block, closed by the same fence or left open to the end of the text
# (the lazy scan stops at the first closing fence; one pass, each block once).
_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(?:[\s\S]*?^[ \t]*\1[ \t]*$|[\s\S]*)", re.M)
_QUOTED_ROLES = frozenset({"tool", "function", "ipython"})
_QUOTED_PART_TYPES = frozenset({"function_call_output", "tool_result", "custom_tool_call_output"})


@dataclass(frozen=True, slots=True)
class PromptBody:
    """The texts of one request body to scan, in order.

    ``shape`` is ``chat`` (``messages``), ``completion`` (``prompt``), ``input``
    (responses, embeddings), ``other`` (a JSON object with none of those), ``lenient``
    (string values read from a body that is not valid JSON) or ``raw`` (the body as
    text). ``truncated`` is true when the body, a
    text or the list of texts was cut to the limits.
    """

    parts: tuple[str, ...]
    shape: str
    truncated: bool = False
    quoted: tuple[bool, ...] = ()
    """Per part: whether it is quoted data rather than the client's own words (a tool or
    function result: OpenAI and Ollama ``role: "tool"`` messages, ``tool_result`` and
    ``function_call_output`` parts); empty when none is."""
    system: tuple[bool, ...] = ()
    """Per part: whether it is system text (``system`` / ``developer`` messages and
    items, Ollama's ``system``, the responses API's ``instructions``): what the
    application tells the model, not a user's turn; empty when none is."""
    turns: tuple[int, ...] = ()
    """Per part: the turn it belongs to (the number of assistant messages before it);
    empty when every part is in turn 0."""

    @property
    def text(self) -> str:
        """The parts joined by newlines (an instruction split across parts stays whole)."""
        return "\n".join(self.parts)

    @property
    def own_text(self) -> str:
        """:attr:`text` without quoted data: the parts that are not tool results, with
        fenced code blocks (```` ``` ```` / ``~~~``) cut out. An attack sentence in a file
        an agent read or in code a user pastes is data the model is shown, not what the
        client asks of it."""
        kept = [p for p, q in zip(self.parts, self.quoted, strict=False) if not q]
        kept.extend(self.parts[len(self.quoted) :])
        text = "\n".join(kept)
        if "```" in text or "~~~" in text:
            text = _FENCED.sub("\n", text)
        return text

    def split(self) -> tuple[PromptBody, tuple[PromptBody, ...]]:
        """The system texts, and the client's turns oldest first, each a body of its own.

        A turn is the texts between two assistant messages (user text and tool
        results); the last one is the newest (or, after an assistant prefill, the one
        the prefill answers). A chat client re-sends its earlier turns unchanged, so a
        turn's text is the same in every request that carries it.
        """
        n = len(self.parts)
        system = self.system or (False,) * n
        quoted = self.quoted or (False,) * n
        turns = self.turns or (0,) * n
        sys_idx = [i for i in range(n) if system[i]]
        by_turn: dict[int, list[int]] = {}
        for i in range(n):
            if not system[i]:
                by_turn.setdefault(turns[i], []).append(i)
        return self._sub(sys_idx, quoted), tuple(
            self._sub(by_turn[t], quoted) for t in sorted(by_turn)
        )

    def _sub(self, idx: list[int], quoted: tuple[bool, ...]) -> PromptBody:
        sub_quoted = tuple(quoted[i] for i in idx)
        return PromptBody(
            tuple(self.parts[i] for i in idx),
            self.shape,
            self.truncated,
            sub_quoted if any(sub_quoted) else (),
        )


class _Collector:
    """Texts gathered from a body, then kept under the part and character limits."""

    __slots__ = ("counts", "dropped", "max_chars", "max_parts", "pending", "turn")

    def __init__(self, max_chars: int, max_parts: int) -> None:
        self.pending: list[tuple[str, bool, bool, int]] = []
        """(text, quoted, system, turn) of the texts found, in body order."""
        self.counts: dict[tuple[bool, int], int] = {}
        """Texts found per (system, turn): past ``max_parts`` one cannot be kept."""
        self.dropped = False
        self.turn = 0
        self.max_chars = max_chars
        self.max_parts = max_parts

    def add(self, text: str, quoted: bool = False, system: bool = False) -> None:
        if not text or text.isspace():
            return
        bucket = (system, self.turn)
        count = self.counts.get(bucket, 0)
        if count >= self.max_parts:
            self.dropped = True
            return
        self.counts[bucket] = count + 1
        self.pending.append((text, quoted, system, self.turn))

    def content(
        self,
        value: Any,
        depth: int = 0,
        quoted: bool = False,
        system: bool = False,
        items: bool = False,
    ) -> None:
        """A message content or an ``input``: a string, a list of them, or parts.

        ``items``: ``value`` is a top-level list of the body (the responses API's
        ``input``), whose objects are messages: only there does an object's ``role``
        make it system text, quoted data or the model's output. An object with a role
        nested in a message's content is a part of that message, as the message is."""
        if isinstance(value, str):
            self.add(value, quoted, system)
        elif isinstance(value, list) and depth < 4:
            for item in value:
                if isinstance(item, str):  # the common case, without a call per level
                    self.add(item, quoted, system)
                elif isinstance(item, dict) and depth < 3:
                    self._part(item, depth + 1, quoted, system, items)
                else:
                    self.content(item, depth + 1, quoted, system)
        elif isinstance(value, dict) and depth < 4:
            self._part(value, depth, quoted, system, items)

    def _part(
        self, part: dict[str, Any], depth: int, quoted: bool, system: bool, item: bool
    ) -> None:
        kind = part.get("type")
        role = part.get("role") if item else None
        if role == "assistant":  # the model's own output (a responses-API item)
            self.turn += 1
        elif kind in _TEXT_PART_TYPES or (kind is None and isinstance(part.get("text"), str)):
            self.content(part.get("text"), depth + 1, quoted, system)
        elif kind in _QUOTED_PART_TYPES:
            self.content(part.get("output", part.get("content")), depth + 1, True, system)
        elif role is not None or kind == "message" or "role" in part:
            self.content(
                part.get("content"),
                depth + 1,
                quoted or role in _QUOTED_ROLES,
                system or role in _SYSTEM_ROLES,
            )

    def body(self, shape: str, cut: bool) -> PromptBody:
        """The texts kept: the last turn first, then the system texts, then earlier
        turns, newest first, while the limits allow; in body order. The last turn goes
        first so that many system messages (a client can write as many as it likes)
        cannot push it out."""
        pending = self.pending
        last = max((t for _, _, s, t in pending if not s), default=0)
        first = [i for i, (_, _, s, t) in enumerate(pending) if not s and t == last]
        first += [i for i, (_, _, s, _t) in enumerate(pending) if s]
        order: list[int] = first
        if len(first) < len(pending):  # earlier turns: the newest first (turns only grow)
            runs: list[list[int]] = []
            for i, (_, _, s, t) in enumerate(pending):
                if not s and t != last:
                    if runs and pending[runs[-1][0]][3] == t:
                        runs[-1].append(i)
                    else:
                        runs.append([i])
            order = first + [i for run in reversed(runs) for i in run]
        kept: dict[int, str] = {}
        chars, truncated = 0, cut or self.dropped
        for i in order:
            if len(kept) >= self.max_parts or chars >= self.max_chars:
                truncated = True
                break
            text = pending[i][0]
            room = self.max_chars - chars
            if len(text) > room:
                text, truncated = text[:room], True
            kept[i] = text
            chars += len(text)
        idx = sorted(kept)
        quoted = tuple(pending[i][1] for i in idx)
        system = tuple(pending[i][2] for i in idx)
        turns = tuple(pending[i][3] for i in idx)
        return PromptBody(
            tuple(kept[i] for i in idx),
            shape,
            truncated,
            quoted if any(quoted) else (),
            system if any(system) else (),
            turns if any(turns) else (),
        )


def _messages(messages: list[Any], out: _Collector) -> None:
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role == "assistant":
            out.turn += 1
        else:
            out.content(
                msg.get("content"), quoted=role in _QUOTED_ROLES, system=role in _SYSTEM_ROLES
            )


def _from_json(data: dict[str, Any], out: _Collector) -> str:
    messages = data.get("messages")
    if isinstance(messages, list):
        _messages(messages, out)
    for key in _TEXT_KEYS:
        value = data.get(key)
        if value is not None:
            out.content(value, system=key in _SYSTEM_KEYS, items=key == "input")
    if isinstance(messages, list):
        return "chat"
    if "prompt" in data:
        return "completion"
    return "input" if "input" in data else "other"


def _lenient(body: str, out: _Collector) -> bool:
    """String values of prompt keys in a body that is not valid JSON; whether any."""
    found = False
    for match in _LENIENT.finditer(body):
        raw = match.group(2)
        if not match.group(3):  # cut inside the string: drop a half escape at the end
            raw = re.sub(r"\\(?:u[0-9a-fA-F]{0,3})?$", "", raw)
        try:
            text = json.loads(f'"{raw}"')
        except ValueError:
            text = raw
        if isinstance(text, str):
            out.add(text)
            found = True
        if out.dropped:
            break
    return found


def _unescape(body: str) -> str | None:
    """``body`` with nginx's ``\\xNN`` escapes or a second JSON encoding undone, or ``None``."""
    if "\\x" in body:
        raw = _NGINX_ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), body)
        # The escapes stand for bytes: UTF-8 sequences come out as one char per byte.
        try:
            return raw.encode("latin-1").decode("utf-8", errors="replace")
        except UnicodeEncodeError:
            return raw
    if body.startswith(('{\\"', '"{')):
        quoted = body if body.startswith('"') else f'"{body}"'
        try:
            inner = json.loads(quoted)
        except (ValueError, RecursionError):
            return None
        return inner if isinstance(inner, str) else None
    return None


def _parse(body: str) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def extract_prompt(
    body: str, *, max_chars: int = MAX_BODY_CHARS, max_parts: int = MAX_PARTS
) -> PromptBody:
    """The client-controlled texts of an AI API request body (see the module doc).

    Never raises on any string; reads at most ``max_chars`` characters of ``body``.
    """
    out = _Collector(max_chars, max_parts)
    cut = len(body) > max_chars
    if cut:
        body = body[:max_chars]
    text = body.strip()
    data = None if cut or not text.startswith(("{", "[")) else _parse(text)
    if data is None:
        inner = _unescape(text)
        if inner is not None:
            text = inner.strip()
            data = None if cut or not text.startswith(("{", "[")) else _parse(text)
    if isinstance(data, list):  # a batch of requests (some proxies accept them)
        shape = "other"
        for item in data[:max_parts]:
            if isinstance(item, dict):
                shape = _from_json(item, out)
                out.turn += 1  # each request of the batch is a conversation of its own
        return out.body(shape, cut)
    if isinstance(data, dict):
        shape = _from_json(data, out)
        return out.body(shape, cut)
    if isinstance(data, str):
        out.add(data)
        return out.body("raw", cut)
    if data is None and _lenient(text, out):
        return out.body("lenient", cut)
    out.add(text)
    return out.body("raw", cut)
