"""The one table of authenticated clients behind RequestIndex's marks.

A differential test drives :class:`RequestIndex` with random batches and compares
every :class:`BatchFacts` with the old logic (two :class:`RecentSet`, one per kind of
mark, with marks worked out event by event), apart from the one documented change:
a credentialed mark older than the latest expiry horizon reads as not known; and
with credentials doubted where a location is open and not checked, worked out event
by event too (:class:`~aisentinel.detectors.shared.CredentialTrust`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

from aisentinel.detectors.paths import DEFAULT_AI_PATHS, PrefixMatcher
from aisentinel.detectors.shared import LOCATION_TTL, BatchFacts, RequestIndex
from aisentinel.detectors.window import RecentSet
from aisentinel.events import Event, HttpRequest, SshEvent, SshKind

NEG_INF = -math.inf
LONG_TTL = 100.0
SHORT_TTL = 30.0
PATHS = (
    "/api/tags",
    "/api/pull",
    "/api/chat",
    "/v1/chat/completions",
    "/v1/models",
    "/admin/panel",
    "/private/data",
    "/index.html",
)
STATUSES = (200, 200, 204, 401, 403, 404)


def _api(path: str) -> bool:
    return path.startswith("/api/")


def _v1(path: str) -> bool:
    return path.startswith("/v1/")


def _admin(path: str) -> bool:
    return path.startswith(("/admin", "/private"))


def _request(
    ts: float,
    client: str,
    path: str = "/api/tags",
    status: int = 200,
    *,
    user: str | None = None,
    key_id: str | None = None,
    method: str = "GET",
) -> HttpRequest:
    return HttpRequest(ts, "web", client, method, path, status, 0, user, "ua", key_id=key_id)


def _index(max_keys: int = 100_000, *, dormant: bool = False) -> tuple[RequestIndex, list[int]]:
    """An index with three marked readers (ttl 100, 30, and 100 for a dormant one)."""
    index = RequestIndex()
    bits = [
        index.register(_api, ttl=LONG_TTL, max_keys=max_keys),
        index.register(_v1, ttl=SHORT_TTL, max_keys=max_keys),
        index.register(_admin, ttl=LONG_TTL, max_keys=max_keys, dormant=dormant),
    ]
    return index, bits


class Reference:
    """The old logic: two :class:`RecentSet` (credentialed; either kind) fed each batch's
    last authentication per client, marks worked out event by event.

    One deliberate difference is applied on reading: a credentialed mark older than
    the latest expiry horizon reads as not known (the old set forgot it only once its
    own queue reached it).
    """

    def __init__(self, tests: Sequence[Callable[[str], bool]], min_ttl: float) -> None:
        self.tests = tests
        self.min_ttl = min_ttl
        self.cred = RecentSet(LONG_TTL, 100_000)
        self.either = RecentSet(LONG_TTL, 100_000)
        self.floor = NEG_INF
        self.protected: dict[str, str | None] = {}
        """``[host\x1f]METHOD path`` -> the one client refused there (401), ``None``
        once two were."""
        self.inference = PrefixMatcher(DEFAULT_AI_PATHS).match
        self.locations: dict[str, tuple[float, float]] = {}
        """First path segment -> (last 401, last 2xx without credentials)."""

    def _counts(self, event: HttpRequest) -> bool:
        """Whether ``event``'s credentials count; learns its evidence."""
        where = event.path.split("/")[1]
        checked, opened = self.locations.get(where, (NEG_INF, NEG_INF))
        if (event.user is not None or event.key_id is not None) and event.status < 400:
            return not event.ts - opened <= LOCATION_TTL < event.ts - checked
        if event.status == 401:
            self.locations[where] = (event.ts, opened)
        elif 200 <= event.status < 300:
            self.locations[where] = (checked, event.ts)
        return False

    def batch(self, events: Sequence[Event], awake: int) -> BatchFacts:
        """The facts of ``events`` for readers whose bits are in ``awake``."""
        masks: list[int] = []
        marks: dict[int, float] = {}
        inferred: dict[int, float] = {}
        cred: dict[str, float] = {}  # the batch's last authentication per client
        either: dict[str, float] = {}
        counted: list[int] = []
        doubted: list[int] = []
        anonymous: list[int] = []
        for i, event in enumerate(events):
            if not isinstance(event, HttpRequest):
                masks.append(0)
                continue
            if 200 <= event.status < 300 and event.user is None and event.key_id is None:
                anonymous.append(i)
            mask = sum(1 << bit for bit, test in enumerate(self.tests) if test(event.path))
            masks.append(mask)
            key = f"{event.method} {event.path}"
            if event.host is not None:
                key = f"{event.host}\x1f{key}"
            credentialed = self._counts(event)
            if credentialed:
                counted.append(i)
            elif (event.user is not None or event.key_id is not None) and event.status < 400:
                doubted.append(i)
            guessed = (
                not credentialed
                and 200 <= event.status < 300
                and (
                    (event.method == "POST" and self.inference(event.path))
                    or self.protected.get(key, "") is None
                )
            )
            if event.status == 401:
                first = self.protected.setdefault(key, event.client)
                if first is not None and first != event.client:
                    self.protected[key] = None
            if credentialed:
                cred[event.client] = event.ts
            if credentialed or guessed:
                either[event.client] = event.ts
            if mask & awake:
                old = self.cred.last(event.client)
                marks[i] = self._mark(event, NEG_INF if old < self.floor else old, cred)
                inferred[i] = self._mark(event, self.either.last(event.client), either)
        for client, ts in cred.items():
            self.cred.add(client, ts)
        for client, ts in either.items():
            self.either.add(client, ts)
        return BatchFacts(
            masks, marks, inferred, counted, frozenset(doubted), anonymous, {}, frozenset()
        )

    def _mark(self, event: HttpRequest, before: float, batch: dict[str, float]) -> float:
        """The mark from before the batch when every reader trusts it, else the exact one."""
        if event.ts - before <= self.min_ttl:
            return before
        return batch.get(event.client, before)

    def expire(self, now: float) -> int:
        """Expire both sets at ``now``; how many clients of either kind went."""
        self.floor = max(self.floor, now - LONG_TTL)
        self.cred.expire(now)
        return self.either.expire(now)


def _random_batch(rng: random.Random, start: float, clients: list[str]) -> list[Event]:
    """10 s of requests from ``clients`` (in time order), now and then with an sshd event."""
    events: list[Event] = []
    ts = start
    for _ in range(rng.randrange(1, 60)):
        ts += rng.uniform(0.0, 10.0 / 60)
        if rng.random() < 0.05:
            client = rng.choice(clients)
            events.append(SshEvent(ts, "ssh", client, SshKind.FAILED_PASSWORD, "root", 22))
            continue
        who = rng.random()
        events.append(
            _request(
                ts,
                rng.choice(clients),
                rng.choice(PATHS),
                rng.choice(STATUSES),
                user="alice" if who < 0.15 else None,
                key_id="k1" if 0.15 <= who < 0.25 else None,
                method=rng.choice(("GET", "POST")),
            )
        )
    return events


def test_facts_match_the_old_two_set_logic_over_random_batches() -> None:
    """Masks, credentialed marks and inferred marks equal the old logic's for every batch,
    with expiry calls between batches and a dormant reader woken halfway."""
    dropped = 0
    for seed in range(40):
        rng = random.Random(seed)
        index, bits = _index(dormant=True)
        reference = Reference((_api, _v1, _admin), SHORT_TTL)
        awake = bits[0] | bits[1]
        clients = [f"10.0.{seed}.{n}" for n in range(rng.randrange(2, 30))]
        for n in range(80):
            if n == 40:
                index.wake(bits[2])
                awake |= bits[2]
            start = 20.0 * n  # batches span at most 10 s
            if n and rng.random() < 0.3:
                now = start - rng.uniform(0.0, 20.0)
                expired = index.expire(now)
                assert expired == reference.expire(now)
                dropped += expired
            events = _random_batch(rng, start, clients)
            assert index.facts(events, object()) == reference.batch(events, awake), (seed, n)
            assert index.authenticated() == len(reference.either)
        assert index.evicted() == 0
    assert dropped > 0


def test_an_authentication_marks_both_and_an_inferred_one_only_either() -> None:
    """A credentialed request sets both marks; a 2xx inference call only the inferred one."""
    index, _ = _index()
    facts = index.facts(
        [_request(10.0, "a", user="u"), _request(11.0, "b", "/api/chat", method="POST")], None
    )
    assert facts.marks == {0: 10.0, 1: NEG_INF}
    assert facts.inferred == {0: 10.0, 1: 11.0}
    later = index.facts([_request(20.0, "a"), _request(21.0, "b")], None)
    assert later.marks == {0: 10.0, 1: NEG_INF}
    assert later.inferred == {0: 10.0, 1: 11.0}
    assert index.authenticated() == 2


def test_a_get_answered_2xx_under_an_ai_prefix_is_no_authentication() -> None:
    """A web app's catch-all page (Open WebUI answers any GET with 200, /api/chatXYZ
    included) marks nothing; the POST of an inference call does."""
    index, _ = _index()
    facts = index.facts(
        [_request(10.0, "a", "/api/chatXYZ"), _request(11.0, "b", "/api/chat")], None
    )
    assert facts.inferred == {0: NEG_INF, 1: NEG_INF}
    facts = index.facts([_request(12.0, "a", "/api/chat", method="POST")], None)
    assert facts.inferred == {0: 12.0}


def test_expiry_follows_the_latest_authentication_of_either_kind() -> None:
    """A client goes when neither mark is within the ttl; its stale credentialed mark
    reads as unknown while a newer inferred one keeps it."""
    index, _ = _index()
    index.facts([_request(0.0, "a", user="u"), _request(0.0, "b", key_id="k")], None)
    index.facts([_request(60.0, "a", "/api/chat", method="POST")], None)  # inferred only
    assert index.expire(150.0) == 1  # b: last seen at 0 < 150 - 100
    assert index.authenticated() == 1
    facts = index.facts([_request(151.0, "a"), _request(151.0, "b")], None)
    assert facts.marks == {0: NEG_INF, 1: NEG_INF}
    assert facts.inferred == {0: 60.0, 1: NEG_INF}
    assert index.expire(161.0) == 1
    assert index.authenticated() == 0


def test_a_full_table_evicts_a_client_with_both_marks() -> None:
    """At the cap the oldest client is evicted, losing both marks, and counted once."""
    index, _ = _index(max_keys=2)
    index.facts(
        [_request(1.0, "a", user="u"), _request(2.0, "b", "/api/chat", method="POST")], None
    )
    # Elsewhere than /api, which b's 2xx without credentials showed open.
    index.facts([_request(3.0, "c", "/v1/models", user="u")], None)
    assert index.authenticated() == 2
    assert index.evicted() == 1
    facts = index.facts([_request(4.0, "a"), _request(4.0, "b"), _request(4.0, "c")], None)
    assert facts.marks == {0: NEG_INF, 1: NEG_INF, 2: 3.0}
    assert facts.inferred == {0: NEG_INF, 1: 2.0, 2: 3.0}


def test_settle_trims_to_the_lowered_cap_counting_clients_once() -> None:
    """After readers with a lower cap register, settle drops the surplus clients and says
    how many clients (not marks) went."""
    index, _ = _index()
    index.facts([_request(float(i), f"c{i}", user="u") for i in range(5)], None)
    assert index.authenticated() == 5
    index.reset()
    index.register(_api, ttl=LONG_TTL, max_keys=2)
    assert index.settle() == 3
    assert index.authenticated() == 2
    assert index.evicted() == 3
    facts = index.facts([_request(10.0, f"c{i}") for i in range(5)], None)
    assert facts.marks == {0: NEG_INF, 1: NEG_INF, 2: NEG_INF, 3: 3.0, 4: 4.0}


def test_refusal_marks_follow_event_order_and_the_ipv6_network() -> None:
    """A reader that asks for ``refusals`` gets, per 401, the proven sign-in before it in
    event order (an IPv6 client's /64 included; a 2xx where that path answered 401 to another
    client, Open WebUI's sign-in or chat, not an open Ollama's inference call) and whether
    its key id is the one its client signed in with."""
    index = RequestIndex()
    index.register(lambda _: False, ttl=LONG_TTL, max_keys=100, refusals=True)
    facts = index.facts(
        [
            _request(0.5, "z", status=401),
            _request(1.0, "a", status=401, key_id="k1"),
            _request(2.0, "a", key_id="k1"),
            _request(3.0, "a", status=401, key_id="k1"),
            _request(4.0, "2001:db8::5", "/api/chat/completions", method="POST"),
            _request(5.0, "2001:db8::6", status=401),
            _request(6.0, "b", "/api/v1/auths/"),
            _request(7.0, "b", status=401),
            _request(8.0, "c", "/api/v1/auths/", status=401),
            _request(9.0, "b", "/api/v1/auths/"),
            _request(10.0, "b", status=401),
            _request(11.0, "d", "/api/generate", method="POST"),
            _request(12.0, "d", status=401),
            _request(13.0, "e", "/api/v1/auths/signin", method="POST"),
            _request(14.0, "e", status=401),
            _request(15.0, "c", "/api/v1/auths/"),
            _request(16.0, "c", status=401),
        ],
        None,
    )
    assert facts.refused == {
        0: NEG_INF,
        1: NEG_INF,
        3: 2.0,
        5: 4.0,
        7: NEG_INF,
        8: NEG_INF,
        10: 9.0,
        12: NEG_INF,
        14: 13.0,
        16: NEG_INF,
    }
    assert facts.accepted == {3}
    assert facts.inferred == {}
    later = index.facts([_request(20.0, "2001:db8::7", status=401)], None)
    assert later.refused == {0: 4.0}
