"""The prompt text of an AI API request body: what :func:`~aisentinel.guard.scan` should see.

:func:`extract_prompt` reads the request bodies of the OpenAI-style API
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``, ``/v1/embeddings``)
and of Ollama (``/api/generate``, ``/api/chat``). The shape is told by the body's keys,
not the path, so the same code serves proxies that mount the APIs elsewhere. It keeps
the text a client controls:

* ``messages`` (chat, both APIs): the content of ``system`` / ``developer`` messages
  wherever they are, and of every message after the last ``assistant`` one (the new
  turn: user text and tool results). Earlier turns were scanned when they were new, and
  assistant text is the model's own output, which a chat client sends back each turn.
  Content may be a string or an array of parts (``{"type": "text", "text": ...}``,
  ``input_text``, nested ``content``); images and other parts are skipped.
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
characters (``PromptBody.truncated`` says when something was cut).

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


class _Collector:
    """Texts gathered under the part and character limits."""

    __slots__ = ("chars", "max_chars", "max_parts", "parts", "quoted", "truncated")

    def __init__(self, max_chars: int, max_parts: int) -> None:
        self.parts: list[str] = []
        self.quoted: list[bool] = []
        self.chars = 0
        self.max_chars = max_chars
        self.max_parts = max_parts
        self.truncated = False

    @property
    def full(self) -> bool:
        return len(self.parts) >= self.max_parts or self.chars >= self.max_chars

    def add(self, text: str, quoted: bool = False) -> None:
        if not text or text.isspace():
            return
        if self.full:
            self.truncated = True
            return
        room = self.max_chars - self.chars
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.parts.append(text)
        self.quoted.append(quoted)
        self.chars += len(text)

    def content(self, value: Any, depth: int = 0, quoted: bool = False) -> None:
        """A message content or an ``input``: a string, a list of them, or parts."""
        if isinstance(value, str):
            self.add(value, quoted)
        elif isinstance(value, list) and depth < 4:
            for item in value:
                if self.full:
                    self.truncated = True
                    return
                self.content(item, depth + 1, quoted)
        elif isinstance(value, dict) and depth < 4:
            self._part(value, depth, quoted)

    def _part(self, part: dict[str, Any], depth: int, quoted: bool) -> None:
        kind = part.get("type")
        role = part.get("role")
        if kind in _TEXT_PART_TYPES or (kind is None and isinstance(part.get("text"), str)):
            self.content(part.get("text"), depth + 1, quoted)
        elif kind in _QUOTED_PART_TYPES:
            self.content(part.get("output", part.get("content")), depth + 1, True)
        elif (role is not None or kind == "message") and role != "assistant":
            self.content(part.get("content"), depth + 1, quoted or role in _QUOTED_ROLES)

    def body(self, shape: str, cut: bool) -> PromptBody:
        quoted = tuple(self.quoted) if any(self.quoted) else ()
        return PromptBody(tuple(self.parts), shape, self.truncated or cut, quoted)


def _messages(messages: list[Any], out: _Collector) -> None:
    last_assistant = -1
    for i, msg in enumerate(messages):
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            last_assistant = i
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in _SYSTEM_ROLES or (i > last_assistant and role != "assistant"):
            out.content(msg.get("content"), quoted=role in _QUOTED_ROLES)
        if out.full:
            out.truncated = out.truncated or i < len(messages) - 1
            return


def _from_json(data: dict[str, Any], out: _Collector) -> str:
    messages = data.get("messages")
    if isinstance(messages, list):
        _messages(messages, out)
    for key in _TEXT_KEYS:
        value = data.get(key)
        if value is not None:
            out.content(value)
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
        if out.full:
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
