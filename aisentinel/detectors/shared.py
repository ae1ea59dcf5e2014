"""Facts about a batch of HTTP requests that several detectors need, computed once.

Four detectors ask questions of every request's path (``rate_abuse``: an AI
endpoint? ``scanning``: a sensitive path? ``ai_recon``: a recon endpoint?
``model_exploit``: a model-management call?) and two of them also ask "did this
client authenticate lately?" (``credential_stuffing`` too, about the members of a
distributed attack, through :meth:`RequestIndex.credentialed`, with a path test
that passes nothing): a request with ``user`` or ``key_id`` set and
status < 400 where something checks them (:class:`CredentialTrust`: nginx logs any
client's Basic user; ``doubted`` requests count as sent without credentials), or an
inferred authentication (bearer tokens and cookies are not in
most log formats): a 2xx on an inference endpoint (:data:`~.paths.DEFAULT_AI_PATHS`),
or a 2xx on a ``METHOD path`` (of the virtual host, when logged) that was answered
401 before to at least two clients (the index learns those paths, at most
:data:`PROTECTED_PATHS_LIMIT`; a 403 is no authentication challenge: Ollama answers
a foreign ``Origin`` with it; ``marks`` count credentials only, ``inferred`` both).
One table holds both answers, one entry per client with two times (its last
authentication with credentials, its last of either kind); it is capped and
expired on the second, so under eviction pressure an evicted client loses both
marks. The pipeline owns one :class:`SharedState`
for as long as it runs
and binds every detector whose class sets ``wants_shared = True`` to it
(:meth:`SharedState.bind`, which calls each one's ``share``); each registers its
path test with the one :class:`RequestIndex` and gets a bit. A reload binds the
new set of detectors to the same state: the path tests are registered afresh
and the authenticated clients are kept, for every reader alike. For each batch
the index then works out, once:

* ``masks``: per event, the bits of the path tests it passes (one dict lookup per
  request, remembered per raw path), so that a detector picks out its few events
  with a list comprehension instead of a loop of its own over every request;
* ``marks``: for the events whose path passes the test of a reader that asked for
  marks, when their client last authenticated, counting the batch's events up to
  and including that one, in event order;
* ``refused`` and ``accepted`` (``http_auth``, registered with ``refusals``): per
  401/403, when its client (an IPv6 one: any address of its /64) last made a sign-in
  that a client without credentials cannot make itself (:meth:`RequestIndex._inferred`:
  a 2xx to Open WebUI's sign-in or chat ``POST``, a 2xx on a :data:`KNOWN_PROTECTED`
  path, or with credentials on any path, where that ``METHOD path`` answered 401 to
  another client), and whether its key id is the one that client last had accepted so.

Marks keep the answers a line-by-line run would give: the pipeline hands every
detector the same batch in turn, so marking the whole batch first would let a
request see an authentication that comes later in the batch. Only the
authenticated requests of clients that also have a marked event in the batch
are walked in order; the rest are applied in one pass afterwards, one store per
distinct client.

The facts of a batch are computed for the first reader that asks and served to
the other registered readers that ask for the same batch object (or, for
``observe``'s fresh 1-tuples, one holding the same event); the same reader asking
again recomputes. Readers must ask for each batch in turn, as the pipeline does.
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Collection, Container, Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple, cast, get_args

from aisentinel.configtypes import CredentialsMode
from aisentinel.detectors.common import all_requests, client_key
from aisentinel.detectors.paths import (
    DEFAULT_AI_PATHS,
    PrefixMatcher,
    VerdictCache,
    path_views,
)
from aisentinel.detectors.window import _NEG_INF, _SlotStore
from aisentinel.events import Event, HttpRequest, ProcessAttribution

if TYPE_CHECKING:
    from aisentinel.detectors.base import Detector


class BatchFacts(NamedTuple):
    """What :meth:`RequestIndex.facts` knows about one batch."""

    masks: list[int]
    """Per event: the OR of the bits of the path tests its path passes (0 for
    events that are not HTTP requests)."""
    marks: dict[int, float]
    """Event index -> when its client last authenticated with credentials in the log
    (``user`` or ``key_id``), that event included, for the events that passed a
    marked reader's test (missing: not known)."""
    inferred: dict[int, float]
    """The same, counting inferred authentications too."""
    credentialed: list[int]
    """The requests whose credentials in the log count as an authentication (user or
    key id set, status below 400, not doubted), in order."""
    doubted: frozenset[int]
    """The requests with a user or key id and status below 400 whose credentials do
    not count (see :class:`CredentialTrust`): taken as requests without credentials."""
    anonymous: list[int]
    """The 2xx requests with no user and no key id, in order (what
    :class:`CredentialTrust` learns open locations from; ``http_auth`` its open paths)."""
    refused: dict[int, float]
    """With a reader that asked for them (``refusals``, see :meth:`RequestIndex.register`),
    per 401/403: when its client last made a proven sign-in before it (see
    :meth:`RequestIndex._inferred`), in event order (an IPv6 client: any address of its
    /64, :func:`~.common.client_key`), or ``-inf``; else empty."""
    accepted: frozenset[int]
    """The same way: the 401/403 with a key id that their client (its /64) last had
    accepted before them (its latest proven sign-in with a key id sent that key id: a 2xx
    where that ``METHOD path`` answered 401 to another client)."""


_NO_FACTS = BatchFacts([], {}, {}, [], frozenset(), [], {}, frozenset())

_DENIED = frozenset((401, 403))
PROTECTED_PATHS_LIMIT = 4096
"""At most this many learned auth-protected paths (oldest forgotten first)."""
KNOWN_PROTECTED = ("/api/v1/auths/", "/api/v1/users/user/settings")
"""Paths known to answer 2xx only to a signed-in user, before any 401/403 there was
seen: Open WebUI's session user and user settings, which its page asks for on every
load. A 2xx there is an authentication, as a successful inference call is (the same
cached verdict per path): a browser opening the UI is known at once, not taken for a
sweep of its ``/api/config``, ``/api/models``, ``/api/v1/...`` calls. Except for
:attr:`BatchFacts.refused` (what excuses ``http_auth``'s rejections): there only once
that ``METHOD path`` (on its virtual host, when logged) answered a 401, to anyone; a
catch-all virtual host that answers any path 200 never does), and to a client other
than the one now answered 2xx (a client's own 401 proves nothing: with no host in the log
another virtual host's 200 follows it). The least recently refused of these keys are
forgotten apart from the other learned paths' (:data:`PROTECTED_PATHS_LIMIT` each)."""
SIGNIN_PATHS = ("/api/v1/auths/signin", "/api/v1/auths/ldap")
"""Open WebUI's sign-in calls: a ``POST`` answered 2xx there is a password checked and
accepted (a wrong one is answered 400), an authentication for every reader."""
_PROTECTED_KEY_CHARS = 200

_UNSEEN = "\x00"  # not looked up yet (RequestIndex._latest_proven)

# _RequestIndex._inference verdicts.
_V_MODEL = 1  # an inference call of a model server: a 2xx to a POST there
_V_PROVEN = 2  # a web app's session inference call or sign-in: a 2xx to a POST there
_V_KNOWN = 3  # a KNOWN_PROTECTED path: a 2xx there

CREDENTIAL_MODES: tuple[str, ...] = get_args(CredentialsMode)
"""``[parsers] credentials``: whether a user or API key id in the access log proves an
authentication (see :class:`CredentialTrust`)."""
LOCATION_TTL = 7 * 86_400.0
"""How long a location's evidence (a 401 served there, a 2xx served there without
credentials) is kept: a week, so a location whose clients send credentials up front
(API keys: 401s are rare) stays known as checked between two typos."""
LOCATIONS_LIMIT = 8192
"""At most this many locations per level (first path segment; virtual host and first
path segment), second-chance eviction: a location still in use stays."""
_SEGMENT_CHARS = 64
_HOST_CHARS = 255


def _protected_key(request: HttpRequest) -> str:
    """``METHOD path`` without the query, truncated, after the virtual host when the log
    has one: the key of a learned protected path."""
    path = request.path
    cut = path.find("?")
    if cut >= 0:
        path = path[:cut]
    host = request.host
    if host is None:
        return f"{request.method} {path[:_PROTECTED_KEY_CHARS]}"
    return f"{host[:_HOST_CHARS]}\x1f{request.method} {path[:_PROTECTED_KEY_CHARS]}"


def no_path(path: str) -> bool:
    """The path test of a reader that reads only the batch's authentications: no
    request passes it."""
    return False


# _AuthMarks slot layout: _AUTH_STRIDE doubles per client.
_AUTH_STRIDE = 5
_CRED = 0  # last authentication with credentials in the log (user or key_id)
_ANY = 1  # last authentication of either kind (credentials or inferred)
_AUTH_QUEUED = 2  # the _ANY time when the client was (re)queued
_KEY = 3  # hash of the key id of its last credentialed request with one (0: none)
_PROVEN = 4  # the last proven sign-in (RequestIndex._inferred): what excuses http_auth


class _AuthMarks(_SlotStore):
    """The clients that authenticated lately: one dict entry, one queue entry and one
    slot of five doubles per client (its last authentication with credentials, its
    last of either kind, the time it was queued at, a hash of the key id its last
    proven sign-in with a key id sent: :func:`key_hash`, and its last proven sign-in:
    :meth:`proven`, see :meth:`RequestIndex._inferred`).

    Capped at ``max_keys`` clients and expired after ``ttl``, both in second-chance
    order on the time of either kind (see :mod:`~.window`): a client goes, with both
    marks, once it has not authenticated in any way for ``ttl``. Its credentialed
    mark alone reads as unknown once it is older than the horizon of the latest
    :meth:`expire`, as if dropped on its own. Under eviction pressure an evicted
    client loses both marks at once (two separate sets used to evict each alone).
    """

    __slots__ = ("_floor", "ttl")

    def __init__(self, ttl: float, max_keys: int) -> None:
        super().__init__(max_keys, (_NEG_INF, _NEG_INF, _NEG_INF, 0.0, _NEG_INF), _AUTH_QUEUED)
        self.ttl = ttl
        self._floor = _NEG_INF
        """The latest expiry horizon: older credentialed marks read as unknown."""

    def _newest(self, base: int) -> float:
        return self._data[base + _ANY]

    def expire(self, now: float) -> int:
        """Drop clients that authenticated in no way since ``now - ttl``; how many."""
        horizon = now - self.ttl
        self._floor = max(self._floor, horizon)
        return self._expire(horizon)

    def marks(self, clients: Iterable[str]) -> tuple[dict[str, float], dict[str, float]]:
        """Per client of ``clients``: when it last authenticated with credentials, and
        in either way (``-inf``: not known)."""
        keys = self._keys
        data = self._data
        floor = self._floor
        cred: dict[str, float] = {}
        either: dict[str, float] = {}
        for client in clients:
            slot = keys.get(client)
            if slot is None:
                cred[client] = _NEG_INF
                either[client] = _NEG_INF
            else:
                base = slot * _AUTH_STRIDE
                mark = data[base + _CRED]
                cred[client] = mark if mark >= floor else _NEG_INF
                either[client] = data[base + _ANY]
        return cred, either

    def credentialed(self, client: str) -> float:
        """When ``client`` last authenticated with credentials (``-inf``: not known)."""
        slot = self._keys.get(client)
        if slot is None:
            return _NEG_INF
        mark = self._data[slot * _AUTH_STRIDE + _CRED]
        return mark if mark >= self._floor else _NEG_INF

    def proven(self, clients: Iterable[str]) -> dict[str, float]:
        """Per client of ``clients``: when it last made a proven sign-in (see
        :meth:`RequestIndex._inferred`; ``-inf``: not known)."""
        keys = self._keys
        data = self._data
        out: dict[str, float] = {}
        for client in clients:
            slot = keys.get(client)
            out[client] = _NEG_INF if slot is None else data[slot * _AUTH_STRIDE + _PROVEN]
        return out

    def keys(self, clients: Iterable[str]) -> dict[str, float]:
        """Per client of ``clients``: :func:`key_hash` of the key id it last authenticated
        with, while its credentialed mark is known (0.0: none)."""
        keys = self._keys
        data = self._data
        floor = self._floor
        out: dict[str, float] = {}
        for client in clients:
            slot = keys.get(client)
            if slot is None:
                out[client] = 0.0
            else:
                base = slot * _AUTH_STRIDE
                out[client] = data[base + _KEY] if data[base + _CRED] >= floor else 0.0
        return out

    def learn_keys(self, keys: dict[str, float]) -> None:
        """Remember ``keys`` (client -> :func:`key_hash` of the key id it last
        authenticated with; every client already held: learned with :meth:`learn`)."""
        held = self._keys
        data = self._data
        for client, key in keys.items():
            slot = held.get(client)
            if slot is not None:
                data[slot * _AUTH_STRIDE + _KEY] = key

    def either(self, client: str) -> float:
        """When ``client`` last authenticated in either way (``-inf``: not known)."""
        slot = self._keys.get(client)
        return _NEG_INF if slot is None else self._data[slot * _AUTH_STRIDE + _ANY]

    def learn(
        self,
        latest: dict[str, float],
        cred: dict[str, float],
        proven: dict[str, float] | None = None,
    ) -> None:
        """Mark each client of ``latest`` as authenticated at its time there, and with
        credentials at its time in ``cred`` (a subset of ``latest``, or ``latest``
        itself), and for :meth:`proven` at its time in ``proven`` (the same; ``None``:
        ``latest``); even if older than the marks held (a client is added when new)."""
        keys = self._keys
        data = self._data  # _allocate extends this array in place
        same = cred is latest
        others = proven is not None and proven is not latest
        for client, ts in latest.items():
            slot = keys.get(client)
            if slot is None:
                slot = self._allocate(client, ts)
            base = slot * _AUTH_STRIDE
            data[base + _ANY] = ts
            if not others:
                data[base + _PROVEN] = ts
            elif proven is not None:
                mark = proven.get(client)
                if mark is not None:
                    data[base + _PROVEN] = mark
            if same:
                data[base + _CRED] = ts
            else:
                mark = cred.get(client)
                if mark is not None:
                    data[base + _CRED] = mark


# _Locations slot layout: _LOC_STRIDE doubles per location.
_LOC_STRIDE = 5
_CHECKED = 0  # the last 401 served there
_OPEN = 1  # the last 2xx served there to a request with no user and no key id
_SERVED = 2  # the same on a model path (_IS_SERVED), never newer than _OPEN
_GUARD_OPEN = 3  # the same on a guarded path (_IS_GUARDED), never newer than _SERVED
_LOC_QUEUED = 4  # the newer of _CHECKED and _OPEN when the location was (re)queued

# _Guards slot layout: _GUARD_STRIDE doubles per location.
_GUARD_STRIDE = 3
_LAST = 0  # the last 401 served on a guarded path there (to the client in _Guards._who)
_OTHER = 1  # the last one served to any other client
_GUARD_QUEUED = 2  # _LAST when the location was (re)queued

# _PathKinds verdicts: bits.
_IS_SERVED = 1  # a 2xx there without credentials shows model calls served to anyone
_IS_GUARDED = 2  # a guarded path (a model-management call)

SESSION_PATHS = ("/api/chat/", "/api/v1/")
"""Inference paths of a web app with logins of its own (Open WebUI's
``/api/chat/completions`` and ``/api/v1/chat/completions``): a 2xx there without
credentials in the log is a signed-in session, not a model server that answers anyone
(Ollama's own is ``/api/chat``)."""

_NO_DOUBTS: frozenset[int] = frozenset()


def key_hash(key_id: str) -> float:
    """A compact stand-in for ``key_id`` (never 0.0: that is "none")."""
    return float(hash(key_id) & 0xFFFFFFFFFFFFF or 1)


_TS = operator.attrgetter("ts")
_PATH = operator.attrgetter("path")
_HOST = operator.attrgetter("host")


def _segment(path: str) -> str:
    """``\\x1f`` and the first segment of ``path`` as nginx picks its location (decoded,
    ``..`` resolved, lower-cased, no query): ``/%61pi/pull?x`` -> ``\\x1f/api``."""
    resolved = path_views(path)[1]
    cut = resolved.find("/", 1)
    if cut > 0:
        resolved = resolved[:cut]
    return "\x1f" + resolved[:_SEGMENT_CHARS]


class _Locations(_SlotStore):
    """Per location, when a 401 and when a 2xx without credentials were last served
    there: three doubles a location, at most :data:`LOCATIONS_LIMIT`, expired
    :data:`LOCATION_TTL` after the newer of the two (second-chance order, see
    :mod:`~.window`)."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__(LOCATIONS_LIMIT, (_NEG_INF,) * _LOC_STRIDE, _LOC_QUEUED)

    def _newest(self, base: int) -> float:
        data = self._data
        return max(data[base + _CHECKED], data[base + _OPEN])

    def note(self, key: str, ts: float, kind: int) -> None:
        """``kind`` (:data:`_CHECKED`, :data:`_OPEN`, :data:`_SERVED`: both of the last
        two, or :data:`_GUARD_OPEN`: all three) was served at ``key`` at ``ts``."""
        slot = self._keys.get(key)
        if slot is None:
            slot = self._allocate(key, ts)
        base = slot * _LOC_STRIDE
        data = self._data
        if kind == _GUARD_OPEN:
            data[base + _GUARD_OPEN] = max(data[base + _GUARD_OPEN], ts)
            kind = _SERVED
        if kind == _SERVED:
            data[base + _SERVED] = max(data[base + _SERVED], ts)
            kind = _OPEN
        data[base + kind] = max(data[base + kind], ts)

    def holds(self, keys: Iterable[str]) -> bool:
        """Whether every one of ``keys`` has a slot."""
        have = self._keys
        return all(key in have for key in keys)

    def update(self, newest: dict[str, float], kind: int) -> None:
        """Each key of ``newest`` (held: :meth:`holds`) had ``kind`` served at its time."""
        keys = self._keys
        data = self._data
        for key, ts in newest.items():
            at = keys[key] * _LOC_STRIDE + kind
            data[at] = max(data[at], ts)

    def checked(self, key: str) -> float:
        """When a 401 was last served at ``key`` (``-inf``: never, as far as held)."""
        slot = self._keys.get(key)
        return _NEG_INF if slot is None else self._data[slot * _LOC_STRIDE + _CHECKED]

    def doubts(self, key: str, ts: float) -> bool:
        """Whether credentials sent to ``key`` at ``ts`` are doubted: a 2xx was served
        there without any within :data:`LOCATION_TTL`, and no 401."""
        slot = self._keys.get(key)
        if slot is None:
            return False
        base = slot * _LOC_STRIDE
        data = self._data
        return ts - data[base + _OPEN] <= LOCATION_TTL < ts - data[base + _CHECKED]

    def serves(self, key: str, ts: float) -> bool:
        """Whether a model path at ``key`` answered a request without credentials with
        a 2xx within :data:`LOCATION_TTL` before ``ts``."""
        slot = self._keys.get(key)
        return slot is not None and ts - self._data[slot * _LOC_STRIDE + _SERVED] <= LOCATION_TTL

    def guards_open(self, key: str) -> float:
        """When a guarded path at ``key`` last answered a request without credentials
        with a 2xx (``-inf``: never, as far as held)."""
        slot = self._keys.get(key)
        return _NEG_INF if slot is None else self._data[slot * _LOC_STRIDE + _GUARD_OPEN]

    def expire(self, now: float) -> int:
        """Drop locations with no evidence since ``now - LOCATION_TTL``; how many."""
        return self._expire(now - LOCATION_TTL)


class _Guards(_SlotStore):
    """Per location, when a 401 was last served on a guarded path there (a model-
    management call: ``model_exploit``'s paths), to which client, and when one was last
    served there to any other client: three doubles a location and the client, at most
    :data:`LOCATIONS_LIMIT`, expired :data:`LOCATION_TTL` after the last 401 (second-chance
    order, see :mod:`~.window`). The client is the one :func:`~.common.client_key` counts
    (an IPv6 address's /64)."""

    __slots__ = ("_who",)

    def __init__(self) -> None:
        super().__init__(LOCATIONS_LIMIT, (_NEG_INF,) * _GUARD_STRIDE, _GUARD_QUEUED)
        self._who: dict[str, str] = {}
        """Location -> the client of its :data:`_LAST` 401."""

    def _newest(self, base: int) -> float:
        return self._data[base + _LAST]

    def _forget(self, key: str, base: int) -> None:
        self._who.pop(key, None)

    def note(self, key: str, ts: float, who: str) -> None:
        """A 401 was served on a guarded path at ``key`` at ``ts`` to client ``who``."""
        slot = self._keys.get(key)
        if slot is None:
            slot = self._allocate(key, ts)
        base = slot * _GUARD_STRIDE
        data = self._data
        last = data[base + _LAST]
        if self._who.get(key) == who:
            data[base + _LAST] = max(last, ts)
        elif ts >= last:  # the one before went to another client
            data[base + _OTHER] = last
            data[base + _LAST] = ts
            self._who[key] = who
        else:
            data[base + _OTHER] = max(data[base + _OTHER], ts)

    def checked(self, key: str, who: str) -> float:
        """When a 401 was last served on a guarded path at ``key`` to a client other than
        ``who`` (``-inf``: never, as far as held)."""
        slot = self._keys.get(key)
        if slot is None:
            return _NEG_INF
        return self._data[slot * _GUARD_STRIDE + (_OTHER if self._who.get(key) == who else _LAST)]

    def refused_two(self, key: str) -> float:
        """When the last two distinct clients had both been served a 401 on a guarded
        path at ``key`` (``-inf``: not yet): from then on, every client has another's."""
        slot = self._keys.get(key)
        return _NEG_INF if slot is None else self._data[slot * _GUARD_STRIDE + _OTHER]

    def expire(self, now: float) -> int:
        """Drop locations with no 401 on a guarded path since ``now - LOCATION_TTL``."""
        return self._expire(now - LOCATION_TTL)


class CredentialTrust:
    """Whether the user or API key id a request carries in the log proves that its
    client authenticated.

    nginx logs ``$remote_user`` from any client's ``Authorization: Basic`` header,
    whether or not anything checks it (``auth_basic`` off: an open Ollama behind
    nginx), and a key id is a slice of whatever Bearer token was sent. So credentials
    in the log prove an authentication only where nginx or the upstream checks them.
    ``mode`` (``[parsers] credentials``):

    * ``"learned"`` (the default): per location, learned from the traffic in event
      order. A location is the first path segment as nginx selects its ``location``
      (``/api`` for ``/api/pull`` and ``/%61pi/pull``), and also the virtual host
      (``host``, when the log has it) and that segment. A location is *checked* once
      a 401 is served there (``auth_basic`` answers a missing or wrong password with
      it, vLLM's ``--api-key`` and Open WebUI a bad key), *open* once a 2xx is served
      there to a request with no user and no key id. A request's credentials (status
      below 400) are doubted when its location, at either level, is open and not
      checked (each fact held :data:`LOCATION_TTL`); with no evidence either way they
      count, as they always did, so a server behind ``auth_basic`` (which answers no
      request without a password with a 2xx) never doubts its users. The level
      without the host keeps a ``Host`` header the client made up from starting a
      location with no evidence. Which log a request came from does not matter (the
      daemon's source names are not the files replay names): virtual hosts logged
      apart in a format without ``host`` share their evidence, and a 401 on one makes
      the same first segment checked on all of them.
      A claim on a *guarded* path (``model_exploit``'s model-management calls,
      registered with ``guarded=True``) is held to more: a 401 anywhere under the
      segment is no proof that nginx checks the model calls (Open WebUI's
      ``/api/v1/auths/`` answers 401 to anyone without a session, Ollama a cloud model
      when it is not signed in, the client's own typo). It is also doubted where a
      model path of its location (an inference call, :data:`~.paths.DEFAULT_AI_PATHS`
      but :data:`SESSION_PATHS`, or a guarded path) answered a request without
      credentials with a 2xx and no guarded path there answered a client other than
      the claiming one (its :func:`~.common.client_key`) with 401 to a request without
      credentials, or where a guarded path there answered a request without
      credentials with a 2xx (each held :data:`LOCATION_TTL`). Only ``auth_basic``'s
      answer to a request without a password is proof: a 401 to a request with a user
      or key (a wrong password, or a cloud model refused by an Ollama that is not
      signed in, the user forged) says nothing of the model calls, and ``auth_basic``
      never lets a guarded call through without one. A server behind ``auth_basic``,
      a health check let through included, serves no model call without a password,
      so its users still count. An Ollama that is not signed in answers a cloud-model
      pull without credentials with 401 too: where nobody pulled without credentials
      within :data:`LOCATION_TTL`, two such refusals are indistinguishable in the log
      from ``auth_basic`` on the model calls (the refused clients still get their
      finding).
    * ``"checked"``: they always count (every location checks them).
    * ``"unchecked"``: they never count (an open server: nothing checks them).

    A doubted request is taken as one without credentials by every reader: it marks
    no authentication, and ``model_exploit`` judges its model calls as unauthenticated.
    """

    __slots__ = (
        "_guard_hosts",
        "_guard_paths",
        "_guard_test",
        "_hosts",
        "_kinds",
        "_paths",
        "_segments",
        "_served_test",
        "doubted",
        "mode",
    )

    def __init__(self, mode: CredentialsMode = "learned") -> None:
        if mode not in CREDENTIAL_MODES:
            raise ValueError(f"credentials mode {mode!r}: one of {', '.join(CREDENTIAL_MODES)}")
        self.mode: CredentialsMode = mode
        self._paths = _Locations()
        """Per first path segment."""
        self._hosts = _Locations()
        """Per virtual host and first path segment (a table of its own: a flood of
        made-up ``Host`` headers cannot push the segments' locations out)."""
        self._segments = VerdictCache(_segment)
        self._guard_paths = _Guards()
        """Per first path segment: the 401s served on guarded paths."""
        self._guard_hosts = _Guards()
        """The same per virtual host and first path segment."""
        inference = PrefixMatcher(DEFAULT_AI_PATHS).match
        session = PrefixMatcher(SESSION_PATHS).match
        self._served_test: Callable[[str], bool] = lambda path: (
            inference(path) and not session(path)
        )
        """An inference call of a model server (not of a web app's session)."""
        self._guard_test: Callable[[str], bool] = no_path
        """The path test of the guarded paths (:meth:`guard`)."""
        self._kinds = VerdictCache(self._kind)
        """Per raw path: :data:`_IS_SERVED` and :data:`_IS_GUARDED` bits."""
        self.doubted = 0
        """Requests whose credentials were doubted."""

    def guard(self, test: Callable[[str], bool]) -> None:
        """Make ``test`` the path test of the guarded paths (a raw path in)."""
        self._guard_test = test
        self._kinds.clear()

    def _kind(self, path: str) -> int:
        """The :data:`_IS_SERVED` and :data:`_IS_GUARDED` bits of ``path``."""
        if self._guard_test(path):
            return _IS_SERVED | _IS_GUARDED
        return _IS_SERVED if self._served_test(path) else 0

    def doubted_in(
        self, events: Sequence[Event], kinds: _Kinds, guarded: Collection[int] = ()
    ) -> frozenset[int]:
        """Of the batch's ``kinds.claims`` (its requests with a user or key id and status
        below 400), those whose credentials do not count (``guarded``: the claims on a
        guarded path); learns the batch's evidence (a 401, a 2xx without credentials),
        in event order: each request is judged on what came before it."""
        mode = self.mode
        if mode == "checked":
            return _NO_DOUBTS
        claims = kinds.claims
        if mode == "unchecked":
            out = claims
        else:
            reqs = cast("Sequence[HttpRequest]", events)
            denied = [i for i in kinds.denied if reqs[i].status == 401]
            opened = kinds.anonymous
            # A claim settled before the batch stays settled unless a location is
            # evicted meanwhile: only where the batch cannot fill a table. A guarded
            # claim is never settled by a 401 alone, nor where the batch serves a
            # guarded call without credentials.
            room = len(denied) + len(opened)
            if claims and self._paths and self._room(room):
                if guarded:
                    plain = [i for i in claims if i not in guarded]
                    kind_of = self._kinds
                    opens_guard = any(kind_of(reqs[i].path) & _IS_GUARDED for i in opened)
                    unsettled = sorted(
                        (self._unsettled(reqs, plain) if plain else [])
                        + (
                            sorted(guarded)
                            if opens_guard
                            else self._unsettled(reqs, sorted(guarded), guarded=True)
                        )
                    )
                else:
                    unsettled = self._unsettled(reqs, claims)
            else:
                unsettled = claims
            if unsettled and (denied or opened or self._paths):
                out = self._walk(reqs, sorted(denied + opened + unsettled), set(unsettled), guarded)
            else:
                # No claim can be doubted: the evidence alone.
                self._note(reqs, denied, opened)
                return _NO_DOUBTS
        if not out:
            return _NO_DOUBTS
        self.doubted += len(out)
        return frozenset(out)

    def _room(self, n: int) -> bool:
        """Whether every table can take ``n`` new locations without evicting one."""
        return all(
            len(table) + n <= table.max_keys
            for table in (self._paths, self._hosts, self._guard_paths, self._guard_hosts)
        )

    def _unsettled(
        self, reqs: Sequence[HttpRequest], claims: list[int], guarded: bool = False
    ) -> list[int]:
        """The ``claims`` that may be doubted, a superset of those that are: all but the
        ones whose location (at each level) was served a 401 within
        :data:`LOCATION_TTL` of the batch's newest claim before the batch, which
        nothing later in it can undo (a server behind ``auth_basic``: every claim);
        for ``guarded`` claims, a 401 on a guarded path to each of two clients without
        credentials too (whoever claims, another client was refused), and no guarded
        call served without credentials within :data:`LOCATION_TTL` of the earliest.
        Decided per distinct path and host of the batch, not per claim."""
        picked = [reqs[i] for i in claims]
        times = list(map(_TS, picked))
        latest = max(times)
        earliest = min(times)
        segment = self._segments
        checked = self._paths.checked
        refused = self._guard_paths.refused_two
        opened = self._paths.guards_open
        paths = {
            path
            for path in set(map(_PATH, picked))
            if latest - checked(segment(path)) > LOCATION_TTL
            or (
                guarded
                and (
                    latest - refused(segment(path)) > LOCATION_TTL
                    or earliest - opened(segment(path)) <= LOCATION_TTL
                )
            )
        }
        hosts = set(map(_HOST, picked))
        pairs: set[tuple[str, str]] = set()
        if hosts != {None}:
            at_host = self._hosts.checked
            refused_at_host = self._guard_hosts.refused_two
            opened_at_host = self._hosts.guards_open
            pairs = {
                (host, path)
                for host, path in set(zip(map(_HOST, picked), map(_PATH, picked), strict=True))
                if host is not None
                and (
                    latest - at_host(host[:_HOST_CHARS] + segment(path)) > LOCATION_TTL
                    or (
                        guarded
                        and (
                            latest - refused_at_host(host[:_HOST_CHARS] + segment(path))
                            > LOCATION_TTL
                            or earliest - opened_at_host(host[:_HOST_CHARS] + segment(path))
                            <= LOCATION_TTL
                        )
                    )
                )
            }
        if pairs:
            return [
                i
                for i, r in zip(claims, picked, strict=True)
                if r.path in paths or (r.host, r.path) in pairs
            ]
        if paths:
            return [i for i, r in zip(claims, picked, strict=True) if r.path in paths]
        return []

    def _note(self, reqs: Sequence[HttpRequest], denied: list[int], opened: list[int]) -> None:
        """Learn the 401s ``denied`` and the 2xx without credentials ``opened`` of a batch
        with no claim to judge: per location and kind, the newest time. The same as one
        at a time when the locations are known and the times in order; else one at a
        time (a new location takes its place in the eviction queue in event order)."""
        paths = self._paths
        hosts = self._hosts
        segment = self._segments
        kind_of = self._kinds
        refused = {p for p in {reqs[i].path for i in denied} if kind_of(p) & _IS_GUARDED}
        refusals = (
            [i for i in denied if reqs[i].path in refused and _anonymous(reqs[i])]
            if refused
            else []
        )
        if refusals and not self._holds_guards(reqs, refusals):  # new locations
            self._walk(reqs, sorted(denied + opened), ())
            return
        learned: list[tuple[int, dict[str, float], dict[str, float]]] = []
        for kind, indices in ((_CHECKED, denied), (_OPEN, opened)):
            if not indices:
                continue
            picked = [reqs[i] for i in indices]
            times = list(map(_TS, picked))
            if not all(map(operator.le, times, times[1:])):  # out of order
                self._walk(reqs, sorted(denied + opened), ())
                return
            # The newest time per path, then per location; the same for the model
            # paths among them (served).
            newest: dict[str, float] = {}
            served: dict[str, float] = {}
            opened_guards: dict[str, float] = {}
            for path, ts in dict(zip(map(_PATH, picked), times, strict=True)).items():
                key = segment(path)
                newest[key] = max(newest.get(key, ts), ts)
                if kind == _OPEN and kind_of(path) & _IS_SERVED:
                    served[key] = max(served.get(key, ts), ts)
                    if kind_of(path) & _IS_GUARDED:
                        opened_guards[key] = max(opened_guards.get(key, ts), ts)
            at_host: dict[str, float] = {}
            served_at_host: dict[str, float] = {}
            opened_guards_at_host: dict[str, float] = {}
            names = list(map(_HOST, picked))
            if names.count(None) != len(names):
                for (name, path), ts in dict(
                    zip(zip(names, map(_PATH, picked), strict=True), times, strict=True)
                ).items():
                    if name is not None:
                        key = name[:_HOST_CHARS] + segment(path)
                        at_host[key] = max(at_host.get(key, ts), ts)
                        if served and kind_of(path) & _IS_SERVED:
                            served_at_host[key] = max(served_at_host.get(key, ts), ts)
                            if kind_of(path) & _IS_GUARDED:
                                opened_guards_at_host[key] = max(
                                    opened_guards_at_host.get(key, ts), ts
                                )
            if not paths.holds(newest) or not hosts.holds(at_host):  # new locations
                self._walk(reqs, sorted(denied + opened), ())
                return
            learned.append((kind, newest, at_host))
            if served:
                learned.append((_SERVED, served, served_at_host))
            if opened_guards:
                learned.append((_GUARD_OPEN, opened_guards, opened_guards_at_host))
        for kind, newest, at_host in learned:
            paths.update(newest, kind)
            hosts.update(at_host, kind)
        for i in refusals:  # the newest time per client is what counts: any order
            self._refused(reqs[i], segment(reqs[i].path))

    def _holds_guards(self, reqs: Sequence[HttpRequest], refusals: list[int]) -> bool:
        """Whether the locations of the 401s on guarded paths ``refusals`` are held."""
        segment = self._segments
        keys = {segment(reqs[i].path) for i in refusals}
        at_host = {
            host[:_HOST_CHARS] + segment(reqs[i].path)
            for i in refusals
            if (host := reqs[i].host) is not None
        }
        paths, hosts = self._guard_paths, self._guard_hosts
        return all(key in paths for key in keys) and all(key in hosts for key in at_host)

    def _refused(self, r: HttpRequest, segment: str) -> None:
        """Learn the 401 ``r`` on a guarded path (at location ``segment``)."""
        who = client_key(r.client)
        self._guard_paths.note(segment, r.ts, who)
        if r.host is not None:
            self._guard_hosts.note(r.host[:_HOST_CHARS] + segment, r.ts, who)

    def _walk(
        self,
        reqs: Sequence[HttpRequest],
        walk: list[int],
        claims: Container[int],
        guarded: Container[int] = (),
    ) -> list[int]:
        """Walk the requests ``walk`` in order: learn the evidence (a 401, a 2xx
        without credentials), judge the ``claims`` (``guarded``: those on a guarded
        path); the doubted ones."""
        get = self._segments.get
        fill = self._segments.fill
        kind_get = self._kinds.get
        kind_fill = self._kinds.fill
        paths = self._paths
        hosts = self._hosts
        out: list[int] = []
        for i in walk:
            r = reqs[i]
            segment = get(r.path)
            if segment is None:
                segment = fill(r.path)
            host = r.host
            at_host = None if host is None else host[:_HOST_CHARS] + segment
            if i in claims:
                if (
                    paths.doubts(segment, r.ts)
                    or (at_host is not None and hosts.doubts(at_host, r.ts))
                    or (i in guarded and self._unguarded(r, segment, at_host))
                ):
                    out.append(i)
                continue
            bits = kind_get(r.path)
            if bits is None:
                bits = kind_fill(r.path)
            if r.status == 401:
                kind = _CHECKED
                if bits & _IS_GUARDED and _anonymous(r):
                    self._refused(r, segment)
            elif bits & _IS_GUARDED:
                kind = _GUARD_OPEN
            else:
                kind = _SERVED if bits & _IS_SERVED else _OPEN
            paths.note(segment, r.ts, kind)
            if at_host is not None:
                hosts.note(at_host, r.ts, kind)
        return out

    def _unguarded(self, claim: HttpRequest, segment: str, at_host: str | None) -> bool:
        """Whether the location of ``claim`` (on a guarded path), at either level, served
        a guarded call without credentials, or a model call and refused no other client
        without credentials a guarded call (each within :data:`LOCATION_TTL`)."""
        ts = claim.ts
        who = client_key(claim.client)
        paths = self._paths
        if paths.serves(segment, ts) and (
            ts - paths.guards_open(segment) <= LOCATION_TTL
            or ts - self._guard_paths.checked(segment, who) > LOCATION_TTL
        ):
            return True
        hosts = self._hosts
        return (
            at_host is not None
            and hosts.serves(at_host, ts)
            and (
                ts - hosts.guards_open(at_host) <= LOCATION_TTL
                or ts - self._guard_hosts.checked(at_host, who) > LOCATION_TTL
            )
        )

    def expire(self, now: float) -> int:
        """Drop locations with no evidence within :data:`LOCATION_TTL`; how many."""
        return (
            self._paths.expire(now)
            + self._hosts.expire(now)
            + self._guard_paths.expire(now)
            + self._guard_hosts.expire(now)
        )

    def locations(self) -> int:
        """Locations held (both levels; those with a 401 on a guarded path once more)."""
        return len(self._paths) + len(self._hosts) + len(self._guard_paths) + len(self._guard_hosts)

    def evicted(self) -> int:
        """Locations pushed out because their table was full."""
        return (
            self._paths.evicted
            + self._hosts.evicted
            + self._guard_paths.evicted
            + self._guard_hosts.evicted
        )


class _Kinds(NamedTuple):
    """The requests of a batch by what they say about authentication (indices, in order)."""

    claims: list[int]
    """With a user or key id, status below 400: credentials that count unless doubted."""
    anonymous: list[int]
    """2xx without a user and without a key id."""
    denied: list[int]
    """401 or 403."""


def _anonymous(request: HttpRequest) -> bool:
    """Whether ``request`` carries no user and no key id."""
    return request.user is None and request.key_id is None


def _classify(events: Sequence[Event], requests: bool) -> _Kinds:
    """The :class:`_Kinds` of ``events`` (``requests``: every event is a request)."""
    if requests:
        reqs = cast("Sequence[HttpRequest]", events)
        return _Kinds(
            [
                i
                for i, r in enumerate(reqs)
                if r.status < 400 and (r.user is not None or r.key_id is not None)
            ],
            [
                i
                for i, r in enumerate(reqs)
                if 200 <= r.status < 300 and r.user is None and r.key_id is None
            ],
            [i for i, r in enumerate(reqs) if r.status in _DENIED],
        )
    return _Kinds(
        [
            i
            for i, e in enumerate(events)
            if isinstance(e, HttpRequest)
            and e.status < 400
            and (e.user is not None or e.key_id is not None)
        ],
        [
            i
            for i, e in enumerate(events)
            if isinstance(e, HttpRequest)
            and 200 <= e.status < 300
            and e.user is None
            and e.key_id is None
        ],
        [i for i, e in enumerate(events) if isinstance(e, HttpRequest) and e.status in _DENIED],
    )


class RequestIndex:
    """Path tests of every registered reader, and the clients that authenticated.

    The authenticated clients are held in one table (:class:`_AuthMarks`: per
    client its last authentication with credentials and its last of either kind),
    bounded by the largest ``max_keys`` a marked reader asked for (second-chance
    eviction on the time of either kind, see :mod:`~.window`), holding a client for
    the longest ``ttl``; each reader applies its own ``ttl``. Under eviction pressure
    an evicted client loses both marks at once (with a set per kind, as before, the
    credentialed set evicted on its own and could keep a client the other dropped).
    """

    __slots__ = (
        "_batch",
        "_batch_len",
        "_dormant",
        "_facts",
        "_held",
        "_inference",
        "_known",
        "_marked",
        "_min_ttl",
        "_protected",
        "_refusals",
        "_served",
        "_strict",
        "_tests",
        "_users",
        "_verdicts",
        "trust",
    )

    def __init__(self) -> None:
        self.trust = CredentialTrust()
        """Which credentials in the log count (kept across reloads, like the clients)."""
        self._strict = 0
        """The bits of readers whose paths are guarded (see :class:`CredentialTrust`)."""
        self._held = _AuthMarks(1.0, 1)
        """Clients that authenticated, inferred authentications included: both marks."""
        self._marked = 0
        """The OR of the bits of readers that need marks."""
        self._dormant = 0
        """The bits of marked readers that ask for no facts yet (see :meth:`wake`): their
        events get no marks, but the authenticated clients are learned all the same."""
        self._min_ttl = 0.0
        """The shortest ``ttl`` of those readers."""
        self._refusals = False
        """Whether a reader asked for the marks of every 401/403 (``refusals``)."""
        self._tests: list[Callable[[str], bool]] = []
        self._verdicts = VerdictCache(self._mask)
        self._users = 0
        inference = PrefixMatcher(DEFAULT_AI_PATHS).match
        session = PrefixMatcher(SESSION_PATHS).match
        self._inference = VerdictCache(
            lambda path: (
                _V_KNOWN
                if path.partition("?")[0] in KNOWN_PROTECTED
                else _V_PROVEN
                if path.partition("?")[0] in SIGNIN_PATHS or (inference(path) and session(path))
                else _V_MODEL
                if inference(path)
                else 0
            )
        )
        """Per raw path: whether a 2xx there shows its client authenticated (``_V_*``: an
        inference call or sign-in, to a ``POST``; a :data:`KNOWN_PROTECTED` path)."""
        self._protected: dict[str, str | None] = {}
        """``METHOD path`` (after the host, when logged) answered 401: the one client
        (:func:`~.common.client_key`) refused there, or ``None`` once two were, when a
        2xx there is an authentication (:meth:`_refused`); least recently refused first."""
        self._known: dict[str, str | None] = {}
        """The same for the :data:`KNOWN_PROTECTED` paths, bounded apart: a flood of other
        401 paths does not push them out."""
        self._batch: Sequence[Event] | None = None
        self._batch_len = 0
        self._facts = _NO_FACTS
        self._served: list[int] = []
        """``id`` of the readers that got the cached batch's facts."""

    def register(
        self,
        test: Callable[[str], bool],
        *,
        ttl: float | None = None,
        max_keys: int = 1,
        dormant: bool = False,
        guarded: bool = False,
        refusals: bool = False,
    ) -> int:
        """Add a reader whose events pass ``test`` (a raw path in, a verdict out); its bit.

        With ``ttl``, the reader also needs marks for those events, trusts a client
        for ``ttl`` seconds after it authenticated, and wants up to ``max_keys``
        clients held. A ``dormant`` reader asks for no facts until it calls
        :meth:`wake` (``gpu_theft`` before the first GPU sample): its events are not
        marked meanwhile, which saves a pass over most of an AI server's requests.
        ``guarded``: its paths are model-management calls, whose credentials need more
        proof that something checks them (see :class:`CredentialTrust`). ``refusals``
        (with ``ttl``): :attr:`BatchFacts.refused` and :attr:`BatchFacts.accepted` are
        filled (``http_auth``: whether a rejection may be the end of its client's
        session); the table then also holds an IPv6 client's /64.
        """
        bit = 1 << len(self._tests)
        if dormant and ttl is not None:
            self._dormant |= bit
        if guarded:
            self._strict |= bit
            self.trust.guard(self._guarded)
        self._tests.append(test)
        self._verdicts.clear()  # masks cached so far lack the new bit
        if ttl is not None:
            held = self._held
            if not self._marked or ttl > held.ttl:
                held.ttl = ttl
            held.max_keys = max(held.max_keys, max_keys)
            if not self._marked or ttl < self._min_ttl:
                self._min_ttl = ttl
            self._marked |= bit
            self._refusals = self._refusals or refusals
        self._users += 1
        return bit

    def wake(self, bit: int) -> None:
        """The dormant reader with ``bit`` asks for facts from now on (marks included)."""
        self._dormant &= ~bit

    def reset(self) -> None:
        """Forget every reader (path tests, bits, cached verdicts and batch facts);
        keep the authenticated clients, whose ``ttl`` and cap the next readers set."""
        self._tests = []
        self._verdicts.clear()
        self._marked = 0
        self._dormant = 0
        self._refusals = False
        self._strict = 0
        self.trust.guard(no_path)
        self._min_ttl = 0.0
        self._users = 0
        self._held.max_keys = 1
        self._forget_batch()

    def settle(self) -> int:
        """Drop the clients over the readers' cap (after a reload lowered it); how many.
        With no reader that needs marks the table is left as it is (until it expires)."""
        return self._held.trim() if self._marked else 0

    def facts(self, events: Sequence[Event], reader: object) -> BatchFacts:
        """The facts of ``events`` for ``reader`` (see the module doc)."""
        if self._is_cached(events) and id(reader) not in self._served:
            facts = self._facts
            self._served.append(id(reader))
            if len(self._served) >= self._users:
                self._forget_batch()
            return facts
        facts = self._compute(events)
        if self._users > 1:
            self._batch = events
            self._batch_len = len(events)
            self._facts = facts
            self._served = [id(reader)]
        return facts

    def _is_cached(self, events: Sequence[Event]) -> bool:
        """Whether ``events`` holds the same event objects as the cached batch."""
        batch = self._batch
        if batch is None or len(events) != self._batch_len:
            return False
        if events is batch:
            return True
        if len(events) == 1:  # observe(): a fresh 1-tuple holding the same event
            return events[0] is batch[0]
        return all(a is b for a, b in zip(events, batch, strict=True))

    def _forget_batch(self) -> None:
        self._batch = None
        self._facts = _NO_FACTS
        self._served = []

    def _guarded(self, path: str) -> bool:
        """Whether ``path`` passes the test of a reader whose paths are guarded."""
        strict = self._strict
        if not strict:
            return False
        mask = self._verdicts.get(path)
        if mask is None:
            mask = self._verdicts.fill(path)
        return bool(mask & strict)

    def _mask(self, path: str) -> int:
        """The bits of the tests ``path`` passes."""
        mask = 0
        for bit, test in enumerate(self._tests):
            if test(path):
                mask |= 1 << bit
        return mask

    def _compute(self, events: Sequence[Event]) -> BatchFacts:
        get = self._verdicts.get
        requests = all_requests(events)
        masks: list[int | None]
        if requests:
            # Every event is a request: no type check per event.
            masks = [get(r.path) for r in cast("Sequence[HttpRequest]", events)]
        else:
            masks = [get(e.path) if isinstance(e, HttpRequest) else 0 for e in events]
        if None in masks:
            fill = self._verdicts.fill
            for i, mask in enumerate(masks):
                if mask is None:
                    masks[i] = fill(cast("HttpRequest", events[i]).path)
        done = cast("list[int]", masks)
        kinds = _classify(events, requests)
        claims = kinds.claims
        strict = self._strict
        guarded = {i for i in claims if done[i] & strict} if strict and claims else _NO_DOUBTS
        doubted = self.trust.doubted_in(events, kinds, guarded)
        cred = [i for i in claims if i not in doubted] if doubted else claims
        if not self._marked:
            return BatchFacts(done, {}, {}, cred, doubted, kinds.anonymous, {}, _NO_DOUBTS)
        return self._marks(cast("Sequence[HttpRequest]", events), done, kinds, cred, doubted)

    def _marks(
        self,
        reqs: Sequence[HttpRequest],
        masks: list[int],
        kinds: _Kinds,
        cred: list[int],
        doubted: frozenset[int],
    ) -> BatchFacts:
        marked = self._marked & ~self._dormant
        need = [i for i, mask in enumerate(masks) if mask & marked] if marked else []
        # Authenticated requests: the credentialed ones (cred), or inferred (see
        # _inferred) among the other 2xx: those without credentials and the doubted.
        denied = kinds.denied
        candidates = kinds.anonymous
        if doubted:
            candidates = sorted(candidates + [i for i in doubted if 200 <= reqs[i].status < 300])
        refusals = self._refusals
        if candidates or denied or (refusals and cred and (self._protected or self._known)):
            inferred, proven_in = self._inferred(reqs, candidates, denied, cred)
        else:
            inferred, proven_in = set(), set()
        authed = sorted(inferred.union(cred)) if inferred else cred
        # The last authentication per client in the batch, of either kind and with
        # credentials.
        latest = {reqs[i].client: reqs[i].ts for i in authed}
        latest_cred = latest if authed is cred else {reqs[i].client: reqs[i].ts for i in cred}
        marks, inferred_marks = self._marks_in(
            reqs, need, cred, authed, latest=latest, latest_cred=latest_cred
        )
        # For the refusals: the proven sign-ins only (see _inferred).
        proven, latest_proven = authed, latest
        keyed: set[int] = set()
        if refusals:
            proven = sorted(proven_in)
            latest_proven = {reqs[i].client: reqs[i].ts for i in proven}
            # The key ids accepted where they are checked (the doubted count as without).
            keyed = {i for i in proven if reqs[i].key_id is not None and i not in doubted}
        refused: dict[int, float] = {}
        accepted = _NO_DOUBTS
        if refusals and denied:
            refused, accepted = self._refused_marks(reqs, denied, keyed, proven, latest_proven)
        # Then the clients held learn the batch.
        held = self._held
        held.learn(latest, latest_cred, latest_proven)
        if refusals and latest_proven:
            self._learn_networks(reqs, keyed, latest_proven, latest_cred)
        return BatchFacts(
            masks, marks, inferred_marks, cred, doubted, kinds.anonymous, refused, accepted
        )

    def _refused_marks(
        self,
        reqs: Sequence[HttpRequest],
        denied: list[int],
        cred: Collection[int],
        authed: list[int],
        latest: dict[str, float],
    ) -> tuple[dict[int, float], frozenset[int]]:
        """:attr:`BatchFacts.refused` and :attr:`BatchFacts.accepted` of the ``denied``
        requests, given the batch's proven sign-ins ``authed`` (in order; ``latest``: the
        last one per client), those of them that accept their key id ``cred`` and the
        clients held from before (an IPv6 client's under its /64: :meth:`_learn_networks`)."""
        held = self._held
        who = {i: client_key(reqs[i].client) for i in denied}
        wanted = set(who.values())
        current = held.proven(wanted)
        keys = held.keys(wanted)
        marks: dict[int, float] = {}
        accepted: set[int] = set()
        apart = wanted.isdisjoint(latest)
        if apart:  # an IPv6 client counts under its /64, an IPv4-mapped one as IPv4
            apart = wanted.isdisjoint([client_key(c) for c in latest if ":" in c])
        if apart:
            steps: Iterable[int] = denied
            credentialed: set[int] = set()
        else:
            hits = {c for c in latest if c in wanted or (":" in c and client_key(c) in wanted)}
            steps = sorted(who.keys() | {i for i in authed if reqs[i].client in hits})
            credentialed = set(cred)
        for i in steps:
            request = reqs[i]
            key_id = request.key_id
            at = who.get(i)
            if at is not None:
                marks[i] = current[at]
                if key_id is not None and keys[at] == key_hash(key_id):
                    accepted.add(i)
                continue
            at = client_key(request.client)
            current[at] = request.ts
            if key_id is not None and i in credentialed:
                keys[at] = key_hash(key_id)
        return marks, frozenset(accepted) if accepted else _NO_DOUBTS

    def _learn_networks(
        self,
        reqs: Sequence[HttpRequest],
        cred: Collection[int],
        latest: dict[str, float],
        latest_cred: dict[str, float],
    ) -> None:
        """Learn the batch for :meth:`_refused_marks`: per client the :func:`key_hash` of
        the last key id accepted where it is checked (``cred``), and an IPv6 client's
        authentications under its /64 as well (one more entry per network: an address of
        it changes)."""
        held = self._held
        last = {reqs[i].client: key for i in cred if (key := reqs[i].key_id) is not None}
        keys = {client: key_hash(key) for client, key in last.items()}
        networks: dict[str, float] = {}
        networks_cred: dict[str, float] = {}
        for client in [c for c in latest if ":" in c]:
            ts = latest[client]
            network = client_key(client)
            if network == client or ts < networks.get(network, _NEG_INF):
                continue
            networks[network] = ts
            mark = latest_cred.get(client)
            if mark is not None:
                networks_cred[network] = mark
                hashed = keys.get(client)
                if hashed is not None:
                    keys[network] = hashed
        if networks:
            held.learn(networks, networks_cred, networks)
        if keys:
            held.learn_keys(keys)

    def _marks_in(
        self,
        reqs: Sequence[HttpRequest],
        need: list[int],
        cred: list[int],
        authed: list[int],
        *,
        latest: dict[str, float],
        latest_cred: dict[str, float],
    ) -> tuple[dict[int, float], dict[int, float]]:
        """Marks of the ``need`` events given the batch's authentications with
        credentials ``cred`` and of either kind ``authed`` (in order; ``authed`` is
        ``cred`` when none was inferred; ``latest`` and ``latest_cred``: the last one per
        client) and the clients held from before (which learn the batch after)."""
        held = self._held
        marks: dict[int, float] = {}
        inferred: dict[int, float] = {}
        if need:
            before_cred, before = held.marks({reqs[i].client for i in need})
            for i in need:
                client = reqs[i].client
                marks[i] = before_cred[client]
                inferred[i] = before[client]
            self._exact(reqs, need, cred, latest_cred, marks)
            self._exact(reqs, need, authed, latest, inferred)
        return marks, inferred

    def _exact(
        self,
        reqs: Sequence[HttpRequest],
        need: list[int],
        authed: list[int],
        latest: dict[str, float],
        out: dict[int, float],
    ) -> None:
        """Make ``out`` (the marks of the ``need`` events from before the batch) exact
        for the batch's authentications ``authed`` (in order; ``latest``: the last one
        per client)."""
        # Settled: trusted by every reader on the marks from before the batch. An
        # authentication later in the batch can only make the mark newer.
        ttl = self._min_ttl
        unsettled = [i for i in need if reqs[i].ts - out[i] > ttl]
        current = {reqs[i].client: out[i] for i in unsettled}
        if not latest.keys().isdisjoint(current):
            self._walk(reqs, unsettled, authed, current, out)

    def _inferred(
        self,
        reqs: Sequence[HttpRequest],
        candidates: list[int],
        denied: list[int],
        cred: list[int],
    ) -> tuple[set[int], set[int]]:
        """Of ``candidates`` (2xx without credentials), those that show their client
        authenticated: a successful inference call or sign-in (a POST), a
        :data:`KNOWN_PROTECTED` path, or a 2xx on a protected ``METHOD path`` (see
        :meth:`_refused`), in event order: a 401 later in the batch protects only the 2xx
        after it. With a reader that asked for ``refusals``, also the proven sign-ins
        (:attr:`BatchFacts.refused` counts only them), which a client without credentials
        cannot make itself: a 2xx to a ``POST`` on Open WebUI's sign-in
        (:data:`SIGNIN_PATHS`) or chat (:data:`SESSION_PATHS`), and a 2xx on a
        :data:`KNOWN_PROTECTED` path, or of the credentialed ``cred``, on any path, that
        answered 401 to another client (its /64) before."""
        get = self._inference.get
        fill = self._inference.fill
        out: set[int] = set()
        proven: set[int] = set()
        rest: list[int] = []
        checks: list[int] = []
        refusals = self._refusals
        for i in candidates:
            request = reqs[i]
            verdict = get(request.path)
            if verdict is None:
                verdict = fill(request.path)
            # An inference call is a POST: a 2xx to a GET there is a web app's catch-all
            # page (Open WebUI answers any GET with 200), which anyone gets.
            if verdict == _V_KNOWN:
                out.add(i)
                if refusals:
                    checks.append(i)
            elif verdict and request.method == "POST":
                out.add(i)
                if refusals and verdict == _V_PROVEN:
                    proven.add(i)
            else:
                rest.append(i)
        if refusals:
            checks.extend(i for i in cred if 200 <= reqs[i].status < 300)
        challenges = [i for i in denied if reqs[i].status == 401]
        protected = self._protected
        known = self._known
        other = self._other
        if not challenges:
            if protected:
                out.update(i for i in rest if protected.get(_protected_key(reqs[i]), "") is None)
            if checks and (protected or known):
                if denied:
                    proven.update(
                        i for i in checks if other(_protected_key(reqs[i]), reqs[i].client)
                    )
                else:
                    self._latest_proven(reqs, checks, proven)
        else:
            judged = set(rest)
            checked = set(checks)
            for i in sorted(rest + checks + challenges) if rest or checks else challenges:
                key = _protected_key(reqs[i])
                if i in judged:
                    if protected.get(key, "") is None:
                        out.add(i)
                elif i in checked:
                    if other(key, reqs[i].client):
                        proven.add(i)
                else:
                    self._refused(key, reqs[i])
        return out, proven

    def _latest_proven(
        self, reqs: Sequence[HttpRequest], checks: list[int], proven: set[int]
    ) -> None:
        """Add to ``proven`` those of ``checks`` (a batch with no 401 and no 403) that
        :meth:`_inferred` needs: per client its last one on a path that answered 401 to
        another client, and its last one with a key id (what the clients held learn), found
        from the end of the batch."""
        refused = self._first
        signed: set[str] = set()
        keyed: set[str] = set()
        # Per METHOD, raw path and host of the batch: the client refused there (see _first).
        firsts: dict[tuple[str, str, str | None], str | None] = {}
        for i in reversed(checks):
            request = reqs[i]
            client = request.client
            has_key = request.key_id is not None
            if client in keyed or (client in signed and not has_key):
                continue
            at = (request.method, request.path, request.host)
            first = firsts.get(at, _UNSEEN)
            if first == _UNSEEN:
                first = firsts[at] = refused(_protected_key(request))
            if first is None or (first != "" and first != client_key(client)):
                proven.add(i)
                signed.add(client)
                if has_key:
                    keyed.add(client)

    def _first(self, key: str) -> str | None:
        """The one client (its :func:`~.common.client_key`) ``key`` (``METHOD path``)
        answered 401, ``None`` once two, ``""`` for none."""
        first = self._protected.get(key, "")
        return self._known.get(key, "") if first == "" else first

    def _other(self, key: str, client: str) -> bool:
        """Whether ``key`` (``METHOD path``) answered 401 to a client other than ``client``
        (its :func:`~.common.client_key`)."""
        first = self._first(key)
        return first is None or (first != "" and first != client_key(client))

    def _refused(self, key: str, request: HttpRequest) -> None:
        """Learn the 401 ``request`` at ``key`` (``METHOD path``). The path is
        protected, and a 2xx there an authentication, once a second client (its /64)
        has been refused there: one client's 401s are its own story (an uptime monitor
        that sends no key, every 5 minutes) and must not make every later 2xx there, a
        sweep's included, an authentication. A 403 is not learned at all: Ollama
        answers a browser extension's foreign ``Origin`` with 403 (anyone can send
        one), and ``deny`` rules answer with it; neither is an authentication
        challenge. Bounded: the least recently refused key is forgotten first, the
        :data:`KNOWN_PROTECTED` paths' keys in a table of their own."""
        path = request.path
        cut = path.find("?")
        table = (
            self._known if (path if cut < 0 else path[:cut]) in KNOWN_PROTECTED else self._protected
        )
        client = client_key(request.client)
        first = table.pop(key, "")
        if first == "":
            if len(table) >= PROTECTED_PATHS_LIMIT:
                del table[next(iter(table))]
            first = client
        elif first is not None and first != client:
            first = None
        table[key] = first  # at the end: the most recently refused

    def protected_paths(self) -> int:
        """Learned ``METHOD path`` keys answered 401 (protected or not yet)."""
        return len(self._protected) + len(self._known)

    @staticmethod
    def _walk(
        reqs: Sequence[HttpRequest],
        unsettled: list[int],
        authed: list[int],
        current: dict[str, float],
        out: dict[int, float],
    ) -> None:
        """Exact marks for ``unsettled`` events, whose clients' marks before the batch
        are ``current`` (some of them authenticated in the batch): walked in event
        order with those authentications."""
        relevant = {j for j in authed if reqs[j].client in current}
        for i in sorted(relevant.union(unsettled)):
            request = reqs[i]
            if i in relevant:
                current[request.client] = request.ts
                if i in out:
                    out[i] = request.ts
            else:
                out[i] = current[request.client]

    def expire(self, now: float) -> int:
        """Drop clients that authenticated in no way within the longest ``ttl`` before
        ``now``; how many (credentialed marks older than that read as not known)."""
        return self._held.expire(now)

    def credentialed(self, client: str) -> float:
        """When ``client`` last authenticated with credentials in the log, as far as the
        batches whose facts were computed go (the latest one's included, whole), or
        ``-inf`` (not known, or older than the longest ``ttl``)."""
        return self._held.credentialed(client)

    def signed_in(self, client: str) -> float:
        """When ``client`` last authenticated in either way (credentials in the log, or
        inferred), as :meth:`credentialed` knows it, or ``-inf``: held only while some
        reader registered a ``ttl``, for the longest one."""
        return self._held.either(client)

    def authenticated(self) -> int:
        """Clients held as having authenticated (inferred included)."""
        return len(self._held)

    def evicted(self) -> int:
        """Authenticated clients pushed out because the table was full (both marks)."""
        return self._held.evicted


class SharedState:
    """What detectors share: one per pipeline, kept across reloads.

    A detector built on its own (``shared=None``) gets a private one; binding it to
    the pipeline's state (:meth:`bind`) moves it over.
    """

    __slots__ = ("alerted", "banned", "gpu_expected", "quiet", "quieted", "requests")

    def __init__(self) -> None:
        self.requests = RequestIndex()
        self.gpu_expected: Callable[[ProcessAttribution], str | None] | None = None
        """``gpu_workload``'s test of the GPU workloads the operator declared (what
        declares the process, or None): ``gpu_theft`` does not page about GPU time they
        use outside the API. Set by ``gpu_workload``'s ``share``; None without it."""
        self.quiet: dict[str, dict[str, float]] = {}
        """Per detector name: key -> until when no finding about it is handed on (the
        enforcement in force then). Written by the pipeline (``Pipeline._hush``); a
        detector may read it to skip building findings the pipeline would drop."""
        self.banned: dict[str, float] = {}
        """Client address -> until when no finding about it, of any detector, is handed
        on (an enforcement in force covers it; written by ``Pipeline._hush``). Read it
        through this attribute each time: the pipeline replaces the dict when it prunes."""
        self.alerted: dict[str, dict[int, dict[str, float]]] = {}
        """Per detector name, per severity of an alert: key (``key``, or ``key`` and
        ``topic`` joined by U+001F) -> until when no finding of that detector about it at
        that severity or below is handed on (``alert_repeat``; written by
        ``Pipeline._hold_back``). A float per key: a storm's 25,000 braked members cost
        about 2 MB."""
        self.quieted: Counter[str] = Counter()
        """Findings dropped per detector because their key is quiet, by the pipeline or
        by the detector itself."""

    def bind(self, detectors: Iterable[Detector]) -> None:
        """Make ``detectors`` the readers of this state, in order: every reader
        registered before is forgotten, the authenticated clients are kept."""
        self.requests.reset()
        self.gpu_expected = None
        for detector in detectors:
            if detector.wants_shared:
                detector.share(self)
        self.requests.settle()

    def expire(self, now: float) -> int:
        """Drop state older than every reader keeps it, and locations without evidence
        (:class:`CredentialTrust`); how many entries."""
        requests = self.requests
        return requests.expire(now) + requests.trust.expire(now)
