"""The prompt text of an AI API request body: what :func:`~aisentinel.guard.scan` should see.

:func:`extract_prompt` reads the request bodies of the OpenAI-style API
(``/v1/chat/completions``, ``/v1/completions``, ``/v1/responses``, ``/v1/embeddings``)
and of Ollama (``/api/generate``, ``/api/chat``). The shape is told by the body's keys,
not the path, so the same code serves proxies that mount the APIs elsewhere (the path,
when given, only tells an embeddings request). It keeps the text a client controls:

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

What a text is matters as much as what it says. Besides the ``system`` / ``developer``
texts and the assistant's, the reader tells apart *quoted data* (:attr:`PromptBody.quoted`):
text the client passes on to the model rather than writes itself, which the detectors
report but never count as the client's own attack:

* tool and function results (``role: "tool"``, ``tool_result``, ``function_call_output``)
  and, in the user text of agents that use XML tools (Cline, Roo Code), everything in a
  message from a ``[read_file for 'path'] Result:`` marker on (the file, command output
  or page the tool gave back);
* the content of wrappers that put chat history and retrieved documents into a user
  message: ``<chat_history>`` (Open WebUI's title, tags, follow-up and search-query
  tasks: the earlier turns, the assistant's included, as ``USER:`` / ``ASSISTANT:``
  lines), ``<context>`` and ``<source ...>`` (Open WebUI's RAG template; the question
  in ``<user_query>`` stays the user's), ``<file_content ...>``,
  ``<final_file_content ...>`` and ``<environment_details>`` (Cline);
* embeddings inputs (a path ending in ``/embeddings`` or ``/embed``, or a body with
  ``encoding_format`` / ``dimensions``, or an ``input`` list of strings): documents
  being indexed, never instructions;
* texts read leniently from a body that is not valid JSON (roles unknown).

A ``prompt`` that holds a chat template rendered by the client (Ollama's
``/api/generate`` with ``"raw": true``, ``/v1/completions`` from LangChain, llama-index
or SillyTavern) is split at its role markers: ChatML (``<|im_start|>role``), Llama 3
(``<|start_header_id|>role<|end_header_id|>``), Llama 2 / Mistral (``[INST]``,
``<<SYS>>``, ``[SYSTEM_PROMPT]``, ``[TOOL_RESULTS]``), Gemma (``<start_of_turn>role``),
Phi-3 / Zephyr (``<|user|>``), Granite, Command R, DeepSeek, gpt-oss and Alpaca-style
``### Instruction:`` headers. System segments (and the text before the first marker)
are system text, assistant segments are left out like assistant messages, tool
segments are quoted data.

The body is parsed whole (``json.loads``) up to :data:`MAX_PARSE_CHARS` characters (the
access-log line cap: no body read from a log line is longer), whatever ``max_chars``
is, so a large image, document or ignored field does not push the prompt out of reach;
``max_chars`` caps the texts kept, the last turn first. Bodies that are not valid JSON
are tolerated: bodies cut short (a full log buffer, a client that hung up) give the
string values of the keys above that were written, up to the cut, the newest first;
a body over :data:`MAX_PARSE_CHARS` is cut, and its first and last
:data:`MAX_PARSE_CHARS` / 2 characters are read so; bodies escaped by nginx's default
log escaping (``\\x22`` for ``"``) or JSON-encoded twice are unescaped first; anything
else is scanned as raw text. The work is bounded: at most :data:`MAX_PARSE_CHARS`
(or ``max_chars``, if larger) characters of the body are read, at most ``max_parts``
texts kept, and the texts kept add up to at most ``max_chars`` characters
(``PromptBody.truncated`` says when something was cut). When a body has more, the last
turn is kept first, then the system texts, then the earlier turns, newest first.

Pure standard library, like the rest of :mod:`aisentinel.guard`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_BODY_CHARS", "MAX_PARSE_CHARS", "MAX_PARTS", "PromptBody", "extract_prompt"]

#: Most characters of prompt text kept from one body (the last turn first).
MAX_BODY_CHARS = 262_144
#: Most characters of a body parsed (or ``max_chars``, if larger): the access-log line
#: cap (:data:`aisentinel.parsers.base.ACCESS_LINE_BYTES`, 1 MiB), so a body read from a
#: log line is parsed whole. A longer body is cut and read leniently.
MAX_PARSE_CHARS = 1_048_576
#: Most texts (message contents, prompts, parts) kept from one body.
MAX_PARTS = 256

_TEXT_KEYS = ("system", "instructions", "prompt", "suffix", "input")
_SYSTEM_ROLES = frozenset({"system", "developer"})
_SYSTEM_KEYS = frozenset({"system", "instructions"})
_PROMPT_KEYS = frozenset({"prompt", "suffix"})
_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# A JSON string value of a key that carries prompt text, possibly cut off at the end.
_LENIENT = re.compile(
    r'(?:"role"\s*:\s*"(user|system|developer|assistant|tool)"\s*,\s*)?'
    r'"(content|text|prompt|suffix|system|instructions|input|output)"\s*:\s*'
    r'"([^"\\]*(?:\\.[^"\\]*)*)("?)',
    re.DOTALL,
)
"""A prompt key's string value, closed or cut, with the message's role when it is
written just before it (``{"role": "user", "content": "..."}``, as clients write it)."""
_NGINX_ESCAPE = re.compile(r"\\x([0-9A-Fa-f]{2})")
# A fenced code block, closed by the same fence or left open to the end of the text
# (the lazy scan stops at the first closing fence; one pass, each block once).
_FENCED = re.compile(r"^[ \t]*(```|~~~)[^\n]*\n(?:[\s\S]*?^[ \t]*\1[ \t]*$|[\s\S]*)", re.M)
_QUOTED_ROLES = frozenset({"tool", "function", "ipython"})
_QUOTED_PART_TYPES = frozenset({"function_call_output", "tool_result", "custom_tool_call_output"})
# The first text of a tool result an agent with XML tools (Cline, Roo Code) puts in a user
# message: "[read_file for 'src/a.py'] Result:", "[attempt_completion] Result:"; what
# follows in the message is what the tool gave back.
# (Matched at the start of a text only; the greedy span backtracks at most 1000 steps.)
_TOOL_RESULT = re.compile(r"\s{0,8}\[[A-Za-z_][\w.:-]{0,63}(?: for [\s\S]{0,1000})?\] Result:")
# Wrappers that put quoted data into a user message: chat history (Open WebUI's task
# prompts), retrieved documents (Open WebUI's RAG template), files and the editor state
# (Cline). Only a wrapper that is closed quotes; its content is data, not the user's words.
_WRAPPER = re.compile(
    r"<(chat_history|context|source|file_content|final_file_content|environment_details)"
    r"(?:\s[^<>\n]{0,300})?>"
)
# Role markers of chat templates a client renders into a ``prompt`` itself. A group holds
# the role's name; a fixed token (no group) has its role in _FIXED_ROLES. Every branch
# starts with a literal character, so the search skips the text between candidates.
_ROLE_MARK = re.compile(
    r"<\|im_start\|>[ \t]*+(\w{0,32})"  # ChatML (Qwen, Yi, many fine-tunes)
    r"|<\|start_header_id\|>[ \t]*+(\w{0,32}+)[ \t]*+<\|end_header_id\|>"  # Llama 3
    r"|<start_of_turn>(\w{0,32})"  # Gemma
    r"|<\|start_of_role\|>(\w{0,32})<\|end_of_role\|>"  # Granite
    r"|<\|start\|>(\w{0,32})"  # gpt-oss (harmony)
    r"|<\|START_OF_TURN_TOKEN\|><\|(\w{1,32})_TOKEN\|>"  # Command R
    r"|<\|(system|user|assistant|tool)\|>"  # Phi-3, Zephyr
    r"|<\uff5c(User|Assistant)\uff5c>"  # DeepSeek
    r"|###?[ \t]*+(Instruction|Input|Response|System|User|Assistant|Human)[ \t]*+:"  # Alpaca
    r"|\[/?INST\]|<</?SYS>>|\[/?SYSTEM_PROMPT\]|\[/?TOOL_RESULTS\]|\[/?AVAILABLE_TOOLS\]"
    r"|<\|im_end\|>|<\|eot_id\|>|<end_of_turn>|<\|end\|>|<\|END_OF_TURN_TOKEN\|>"
    r"|<\|endoftext\|>|</s>|<s>|<bos>|<\|begin_of_text\|>"
)
_FIXED_ROLES = {
    "[INST]": "user",
    "[/INST]": "assistant",
    "<<SYS>>": "system",
    "[SYSTEM_PROMPT]": "system",
    "[AVAILABLE_TOOLS]": "system",
    "[TOOL_RESULTS]": "tool",
}
"""The role a fixed template token starts; any other (a closing or end token) goes back
to the user's text, so no text between markers is left unread."""
_BOS = frozenset({"<s>", "<bos>", "<|begin_of_text|>"})
"""Begin-of-text tokens: cut out, the role goes on."""
_TEMPLATE_SYSTEM = frozenset({"system", "developer", "sys"})
_TEMPLATE_ASSISTANT = frozenset({"assistant", "model", "chatbot", "bot", "gpt", "response"})
_TEMPLATE_TOOL = frozenset({"tool", "ipython", "function", "tool_response", "tool_results"})
_EMBEDDING_PATHS = ("/embeddings", "/embed")
_EMBEDDING_KEYS = ("encoding_format", "dimensions")


def _template_role(match: re.Match[str], current: str) -> str:
    """``system``, ``assistant``, ``tool`` or ``user``: the role a role marker starts (a
    begin-of-text token keeps ``current``)."""
    if match.lastindex is None:  # a fixed token
        name = match.group()
        return current if name in _BOS else _FIXED_ROLES.get(name, "user")
    name = match.group(match.lastindex)
    name = name.lower()
    if name in _TEMPLATE_SYSTEM:
        return "system"
    if name in _TEMPLATE_ASSISTANT:
        return "assistant"
    return "tool" if name in _TEMPLATE_TOOL else "user"


def _wrapped(text: str) -> list[tuple[int, int]] | None:
    """The spans of ``text`` inside a closed quoting wrapper (tags included), or ``None``.

    Linear: each search either moves past a closing tag or rules its name out for the
    rest of the text."""
    spans: list[tuple[int, int]] = []
    dead: set[str] = set()
    pos = 0
    while True:
        match = _WRAPPER.search(text, pos)
        if match is None:
            break
        name = match.group(1)
        if name in dead:
            pos = match.end()
            continue
        close = f"</{name}>"
        end = text.find(close, match.end())
        if end < 0:
            dead.add(name)
            pos = match.end()
            continue
        pos = end + len(close)
        spans.append((match.start(), pos))
    return spans or None


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
    function result, a wrapped chat history or document, an embeddings input, a text
    whose role is unknown: see the module doc); empty when none is."""
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

    __slots__ = ("counts", "dropped", "max_chars", "max_parts", "pending", "result", "turn")

    def __init__(self, max_chars: int, max_parts: int) -> None:
        self.pending: list[tuple[str, bool, bool, int]] = []
        """(text, quoted, system, turn) of the texts found, in body order."""
        self.counts: dict[tuple[bool, int], int] = {}
        """Texts found per (system, turn): past ``max_parts`` one cannot be kept."""
        self.dropped = False
        self.turn = 0
        self.result = False
        """Whether the message being read has had an agent's tool-result marker: the rest
        of it is what the tool gave back."""
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

    def text(self, text: str, quoted: bool = False, system: bool = False) -> None:
        """A text of a message: user text is split into the user's words and the quoted
        data in it (an agent's tool result, a closed wrapper: see the module doc)."""
        if quoted or system:
            self.add(text, quoted, system)
            return
        if self.result or _TOOL_RESULT.match(text):
            self.result = True
            self.add(text, True)
            return
        spans = _wrapped(text) if "</" in text else None
        if spans is None:
            self.add(text)
            return
        pos = 0
        for start, end in spans:
            self.add(text[pos:start])
            self.add(text[start:end], True)
            pos = end
        self.add(text[pos:])

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
            self.text(value, quoted, system)
        elif isinstance(value, list) and depth < 4:
            for item in value:
                if isinstance(item, str):  # the common case, without a call per level
                    self.text(item, quoted, system)
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
        if item:
            self.result = False  # a message of its own
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

    def template(self, prompt: str, quoted: bool) -> None:
        """A ``prompt`` string: split at chat-template role markers when it has any."""
        marks = _ROLE_MARK.finditer(prompt)
        match = next(marks, None)
        if match is None:
            self.text(prompt, quoted)
            return
        # The text before the first role marker is the template's preamble (Alpaca's "Below
        # is an instruction...", DeepSeek's system prompt), unless that marker ends a role.
        opens = match.lastindex is not None or match.group() in _FIXED_ROLES
        role = "system" if opens else "user"
        start = 0
        while match is not None:
            self._segment(prompt[start : match.start()], role, quoted)
            new = _template_role(match, role)
            if new == "assistant" and role != "assistant":
                self.turn += 1  # the model's own output, as an assistant message
            role, start = new, match.end()
            match = next(marks, None)
        self._segment(prompt[start:], role, quoted)

    def _segment(self, text: str, role: str, quoted: bool) -> None:
        self.result = False
        if role == "system":
            self.add(text, quoted, True)
        else:
            # An assistant segment is the client's own text too (a forged prefill or
            # many-shot turns): scanned and alerted on as quoted data, never dropped.
            self.text(text, quoted or role in ("tool", "assistant"))

    def body(self, shape: str, cut: bool, newest_first: bool = False) -> PromptBody:
        """The texts kept: the last turn first, then the system texts, then earlier
        turns, newest first, while the limits allow; in body order. The last turn goes
        first so that many system messages (a client can write as many as it likes)
        cannot push it out. ``newest_first``: the texts are kept from the last one back
        (a body read leniently: its turns are unknown)."""
        pending = self.pending
        last = max((t for _, _, s, t in pending if not s), default=0)
        first = [i for i, (_, _, s, t) in enumerate(pending) if not s and t == last]
        first += [i for i, (_, _, s, _t) in enumerate(pending) if s]
        order: list[int] = first
        if newest_first:
            order = list(range(len(pending) - 1, -1, -1))
        elif len(first) < len(pending):  # earlier turns: the newest first (turns only grow)
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
                # Its start and its end: padding on either side of an instruction does
                # not push it out of what is scanned.
                head = room // 2
                rest = max(room - head - 1, 0)
                text, truncated = text[:head] + "\n" + text[len(text) - rest :], True
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
        out.result = False
        if role == "assistant":
            out.turn += 1
        else:
            out.content(
                msg.get("content"), quoted=role in _QUOTED_ROLES, system=role in _SYSTEM_ROLES
            )


def _prompts(value: Any, out: _Collector, quoted: bool) -> None:
    """``prompt`` / ``suffix``: a string or a list of them (a list of token ids is no text)."""
    if isinstance(value, str):
        out.template(value, quoted)
    elif isinstance(value, list):
        for item in value[: out.max_parts]:
            if isinstance(item, str):
                out.template(item, quoted)


def _documents(data: dict[str, Any], path: str) -> bool:
    """Whether the body is an embeddings request: its inputs are documents."""
    if path.partition("?")[0].rstrip("/").endswith(_EMBEDDING_PATHS):
        return True
    if "messages" in data or "input" not in data:
        return False
    value = data["input"]
    if any(key in data for key in _EMBEDDING_KEYS):
        return True
    # the responses API's input list holds message objects; embeddings' strings or tokens
    return isinstance(value, list) and bool(value) and not any(isinstance(v, dict) for v in value)


def _from_json(data: dict[str, Any], out: _Collector, path: str) -> str:
    messages = data.get("messages")
    if isinstance(messages, list):
        _messages(messages, out)
    documents = _documents(data, path)
    for key in _TEXT_KEYS:
        value = data.get(key)
        if value is None:
            continue
        out.result = False
        if key in _PROMPT_KEYS:
            _prompts(value, out, documents)
        else:
            out.content(
                value,
                quoted=documents and key == "input",
                system=key in _SYSTEM_KEYS,
                items=key == "input",
            )
    if isinstance(messages, list):
        return "chat"
    if "prompt" in data:
        return "completion"
    return "input" if "input" in data else "other"


def _lenient(body: str, out: _Collector) -> bool:
    """String values of prompt keys in a body that is not valid JSON, the last
    ``max_parts`` of them; whether any. A message's ``content`` whose ``"role": "user"``
    is written just before it is the user's words (a chat request cut at the log line's
    cap: its last user turn still counts); every other text's role is unknown: quoted
    data, or system text after ``"role": "system"``/``"developer"``."""
    found: list[tuple[str, bool, str]] = []
    for match in _LENIENT.finditer(body):
        role = match.group(1) if match.group(2) == "content" else None
        found.append((match.group(3), bool(match.group(4)), role or ""))
        if len(found) > 2 * out.max_parts:
            del found[: out.max_parts]
    for value, closed, role in found[-out.max_parts :]:
        # cut inside the string: drop a half escape at the end
        raw = value if closed else re.sub(r"\\(?:u[0-9a-fA-F]{0,3})?$", "", value)
        try:
            text = json.loads(f'"{raw}"')
        except ValueError:
            text = raw
        if not isinstance(text, str):
            continue
        if role == "user":
            out.text(text)
        elif role in ("system", "developer"):
            out.add(text, system=True)
        else:
            out.add(text, True)
    return bool(found)


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
    body: str,
    *,
    max_chars: int = MAX_BODY_CHARS,
    max_parts: int = MAX_PARTS,
    path: str = "",
) -> PromptBody:
    """The client-controlled texts of an AI API request body (see the module doc).

    ``path``: the request's path, when known (tells an embeddings request). Never raises
    on any string; reads at most :data:`MAX_PARSE_CHARS` (or ``max_chars``, if larger)
    characters of ``body``.
    """
    out = _Collector(max_chars, max_parts)
    limit = max(max_chars, MAX_PARSE_CHARS)
    cut = len(body) > limit
    tail = ""
    if cut:
        body, tail = body[: limit // 2], body[-(limit // 2) :]
    text = body.strip()
    data = None if cut or not text.startswith(("{", "[")) else _parse(text)
    if data is None:
        inner = _unescape(text)
        if inner is not None:
            text = inner.strip()
            data = None if cut or not text.startswith(("{", "[")) else _parse(text)
            if cut:
                tail = _unescape(tail) or tail
    if isinstance(data, list):  # a batch of requests (some proxies accept them)
        shape = "other"
        for item in data[:max_parts]:
            if isinstance(item, dict):
                shape = _from_json(item, out, path)
                out.turn += 1  # each request of the batch is a conversation of its own
        return out.body(shape, cut)
    if isinstance(data, dict):
        shape = _from_json(data, out, path)
        return out.body(shape, cut)
    if isinstance(data, str):
        out.add(data)
        return out.body("raw", cut)
    found = _lenient(text, out)
    if tail:
        out.turn += 1  # the end of the body: the newest texts, kept first
        found = _lenient(tail, out) or found
    if found:
        return out.body("lenient", cut, newest_first=True)
    out.add(text)
    return out.body("raw", cut)
