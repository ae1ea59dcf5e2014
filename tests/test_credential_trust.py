"""Credentials in the log count only where something checks them (CredentialTrust).

nginx logs ``$remote_user`` from any ``Authorization: Basic`` header, checked or not:
``curl -u admin:x`` against an open Ollama behind nginx logs the user ``admin``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from aisentinel.clock import FakeClock
from aisentinel.config import ConfigError, parse_config
from aisentinel.configtypes import CredentialsMode
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.detectors import build_detectors
from aisentinel.detectors import shared as shared_module
from aisentinel.detectors.ai_recon import AiReconConfig, AiReconDetector
from aisentinel.detectors.credential_stuffing import (
    CredentialStuffingConfig,
    CredentialStuffingDetector,
)
from aisentinel.detectors.http_auth import HttpAuthConfig, HttpAuthDetector
from aisentinel.detectors.model_exploit import ModelExploitConfig, ModelExploitDetector
from aisentinel.detectors.shared import (
    LOCATION_TTL,
    LOCATIONS_LIMIT,
    CredentialTrust,
    RequestIndex,
    SharedState,
)
from aisentinel.events import Event, Finding, HttpRequest, LineBatch, Severity, SshEvent, SshKind
from aisentinel.parsers.base import ParsersConfig
from aisentinel.pipeline import Pipeline

T0 = 1_764_000_000.0
ATTACKER = "203.0.113.66"
OTHER = "198.51.100.7"


def req(
    ts: float,
    path: str,
    status: int = 200,
    *,
    client: str = ATTACKER,
    user: str | None = None,
    key_id: str | None = None,
    host: str | None = None,
    source: str = "nginx",
) -> HttpRequest:
    return HttpRequest(
        T0 + ts, source, client, "POST", path, status, 0, user, "curl/8", key_id=key_id, host=host
    )


def model_exploit(mode: CredentialsMode = "learned", **kw: object) -> ModelExploitDetector:
    shared = SharedState()
    shared.requests.trust.mode = mode
    return ModelExploitDetector(ModelExploitConfig.model_validate(kw), shared=shared)


def run(det: ModelExploitDetector, events: list[Event]) -> list[Finding]:
    return [f for _, f in det.observe_many(events)]


OPEN = req(0, "/api/tags", client=OTHER)
"""Someone's request without credentials answered 2xx: /api is open."""


def test_forged_basic_user_on_an_open_location_is_high() -> None:
    """A user claimed where 2xx answers go to requests without credentials (and no 401)
    is no authentication: the pull is HIGH, and the finding names the claimed user."""
    found = run(model_exploit(), [OPEN, req(5, "/api/pull", user="admin\x1b[2J")])
    assert [f.severity for f in found] == [Severity.HIGH]
    assert "unauthenticated model-management requests" in found[0].message
    assert "user 'admin\\x1b[2J' claimed, not checked there" in found[0].message
    assert "\x1b" not in found[0].message


def test_model_admins_never_exempt_an_unchecked_claim() -> None:
    """A name in model_admins sent where nothing checks it is still an unauthenticated pull."""
    det = model_exploit(model_admins=["admin"])
    found = run(det, [OPEN, req(5, "/api/pull", user="admin")])
    assert [f.severity for f in found] == [Severity.HIGH]
    # A forged API key id too, in a batch of its own.
    other = model_exploit(model_admins=["k1"])
    found = run(other, [OPEN])
    found += run(other, [req(5, "/api/pull", key_id="k1")])
    assert [f.severity for f in found] == [Severity.HIGH]
    assert "API key id 'k1' claimed" in found[0].message


def test_a_claim_does_not_lend_an_earlier_authentication() -> None:
    """A client that authenticated before (elsewhere) and then pulls with a user nothing
    checks is judged on that pull: unauthenticated."""
    events: list[Event] = [
        req(0, "/v1/models", 401, client=OTHER),  # /v1 checks credentials
        req(1, "/v1/models", user="admin"),  # the attacker authenticated there
        OPEN,
        req(5, "/api/pull", user="admin"),
    ]
    found = run(model_exploit(model_admins=["admin"]), events)
    assert [f.severity for f in found] == [Severity.HIGH]


def test_checked_location_keeps_its_users_authenticated() -> None:
    """Behind a location that answered 401 (auth_basic, an API key check), a claimed user
    stays authenticated even when some requests there get 2xx without credentials."""
    events: list[Event] = [
        req(0, "/api/tags", 401, client=OTHER),
        OPEN,  # a monitoring probe let through without a password
        req(5, "/api/pull", user="alice"),
    ]
    assert run(model_exploit(model_admins=["alice"]), events) == []
    found = run(model_exploit(), events)  # learning mode: first pull by alice, MEDIUM
    assert [f.severity for f in found] == [Severity.MEDIUM]


def test_no_evidence_keeps_credentials_trusted() -> None:
    """With neither a 401 nor an open 2xx seen (a server behind auth_basic answers every
    request without a password with 401, which counts as checked), a claimed user counts
    as before: the admin's first pull after an upgrade is not banned."""
    assert run(model_exploit(model_admins=["admin"]), [req(0, "/api/pull", user="admin")]) == []
    # An open 2xx elsewhere (another first segment) is no evidence about /api.
    events: list[Event] = [req(0, "/static/app.js", client=OTHER), req(1, "/api/pull", user="a")]
    assert run(model_exploit(model_admins=["a"]), events) == []


def test_evidence_ages_out_after_its_ttl() -> None:
    """An open 2xx older than LOCATION_TTL no longer casts doubt."""
    later = LOCATION_TTL + 10
    events: list[Event] = [OPEN, req(later, "/api/pull", user="admin")]
    assert run(model_exploit(model_admins=["admin"]), events) == []


@pytest.mark.parametrize(
    ("mode", "first", "severities"),
    [
        ("checked", OPEN, []),  # open location, yet credentials always count
        ("unchecked", req(0, "/api/tags", 401, client=OTHER), [Severity.HIGH]),  # never
        ("learned", OPEN, [Severity.HIGH]),
    ],
)
def test_the_operator_override_works_both_ways(
    mode: CredentialsMode, first: HttpRequest, severities: list[Severity]
) -> None:
    """[parsers] credentials = "checked" trusts every claim, "unchecked" none."""
    det = model_exploit(mode, model_admins=["admin"])
    found = run(det, [first, req(5, "/api/pull", user="admin")])
    assert [f.severity for f in found] == severities


def test_a_made_up_host_does_not_start_a_location_without_evidence() -> None:
    """The virtual host is a location of its own, but a Host header nobody used before
    is still judged by its path's location without the host (open: doubted)."""
    events: list[Event] = [
        req(0, "/api/tags", client=OTHER, host="ai.example.org"),
        req(5, "/api/pull", user="admin", host="made-up.invalid"),
    ]
    assert len(run(model_exploit(model_admins=["admin"]), events)) == 1


def test_an_open_virtual_host_is_doubted_beside_a_checked_one() -> None:
    """One log, two virtual hosts: claims on the checked one count, on the open one not."""
    events: list[Event] = [
        req(0, "/api/tags", 401, client=OTHER, host="private.example.org"),
        req(1, "/api/tags", client=OTHER, host="open.example.org"),
        req(5, "/api/pull", user="admin", host="private.example.org"),
        req(6, "/api/pull", user="admin", host="open.example.org", client="192.0.2.9"),
    ]
    found = run(model_exploit(model_admins=["admin"]), events)
    assert [f.client for f in found] == ["192.0.2.9"]


def test_evidence_holds_across_log_files() -> None:
    """A rotated file (replay names each file its source) keeps what the one before
    showed: the location is the path's, not the log's."""
    found = run(
        model_exploit(model_admins=["admin"]),
        [OPEN, req(5, "/api/pull", user="admin", source="/var/log/nginx/access.log.1")],
    )
    assert [f.severity for f in found] == [Severity.HIGH]


def test_an_escaped_path_is_the_location_nginx_picks() -> None:
    """``/%61pi/pull`` is ``/api/pull`` to nginx and Ollama: the /api location's evidence."""
    found = run(model_exploit(model_admins=["admin"]), [OPEN, req(5, "/%61pi/pull", user="admin")])
    assert [f.severity for f in found] == [Severity.HIGH]


def test_evidence_is_learned_in_event_order_whatever_the_batches() -> None:
    """One batch or one event at a time: the same findings (a claim is judged on what
    came before it, including earlier events of its own batch)."""
    events: list[Event] = [
        req(0, "/api/pull", user="admin"),  # before any evidence: counts
        OPEN,
        req(2, "/api/pull", user="admin", client="192.0.2.20"),  # open: HIGH
        req(3, "/api/tags", 401, client=OTHER),
        req(4, "/api/pull", user="admin", client="192.0.2.21"),  # checked now: counts
    ]
    whole = run(model_exploit(model_admins=["admin"]), events)
    det = model_exploit(model_admins=["admin"])
    single = [f for e in events for f in run(det, [e])]
    assert [f.client for f in whole] == ["192.0.2.20"]
    assert whole == single


def test_pipeline_batches_give_the_same_findings(tmp_path: Path) -> None:
    """Through the pipeline, one batch of lines or one line per batch: same findings."""
    lines = [
        '192.0.2.5 - - [24/Nov/2025:16:00:00 +0000] "GET /api/tags HTTP/1.1" 200 9 "-" "x"',
        '192.0.2.6 - admin [24/Nov/2025:16:00:01 +0000] "POST /api/pull HTTP/1.1" 200 9 "-" "x"',
        '192.0.2.7 - - [24/Nov/2025:16:00:02 +0000] "GET /v1/models HTTP/1.1" 401 9 "-" "x"',
        '192.0.2.8 - bob [24/Nov/2025:16:00:03 +0000] "POST /v1/load_lora_adapter HTTP/1.1" '
        '200 9 "-" "x"',
    ]
    runs: list[list[Finding]] = [[], []]
    for n, seen in enumerate(runs):
        (tmp_path / str(n)).mkdir()
        pipeline = _pipeline(tmp_path / str(n), seen)
        for batch in [lines] if n == 0 else [[line] for line in lines]:
            pipeline.process(LineBatch("access", "nginx", batch, 0.0))
    metrics = {m.name: m.samples[0].value for m in pipeline.collect() if m.samples}
    assert metrics["aisentinel_detector_shared_doubted_credentials"] == 1  # admin's pull
    assert metrics["aisentinel_detector_shared_credential_locations"] == 2  # /api, /v1
    model = [f for f in runs[0] if f.detector == "model_exploit"]
    # admin's pull where /api is open: HIGH; bob's first LoRA load where /v1 answered
    # 401: an authenticated user's unusual use, MEDIUM.
    assert [(f.client, f.severity) for f in model] == [
        ("192.0.2.6", Severity.HIGH),
        ("192.0.2.8", Severity.MEDIUM),
    ]
    assert runs[0] == runs[1]


def _pipeline(
    tmp_path: Path, seen: list[Finding], parsers: ParsersConfig | None = None
) -> Pipeline:
    clock = FakeClock(T0)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite", clock), clock)
    return Pipeline(
        detectors=build_detectors({}),
        engine=engine,
        runner=None,
        clock=clock,
        on_finding=seen.append,
        parsers_config=parsers,
    )


def test_the_pipeline_applies_the_configured_mode_and_a_reload_changes_it(
    tmp_path: Path,
) -> None:
    """[parsers] credentials reaches the shared state at start and at every reload, and
    what was learned is kept across the reload."""
    seen: list[Finding] = []
    config = parse_config({"parsers": {"credentials": "checked"}})
    pipeline = _pipeline(tmp_path, seen, config.parsers)
    trust = pipeline.shared.requests.trust
    assert trust.mode == "checked"
    pipeline.reconfigure(
        detectors=build_detectors({}),
        engine=pipeline.engine,
        runner=None,
        parsers_config=parse_config({}).parsers,
    )
    assert pipeline.shared.requests.trust is trust
    assert trust.mode == "learned"


def test_a_bad_mode_is_refused_with_its_key() -> None:
    """A value other than learned, checked or unchecked is a config error naming the key."""
    with pytest.raises(ConfigError) as caught:
        parse_config({"parsers": {"credentials": "sometimes"}}, "x.toml")
    issue = caught.value.issues[0]
    assert (issue.file, issue.key) == ("x.toml", "parsers.credentials")
    assert "learned" in issue.reason
    with pytest.raises(ValueError, match="credentials mode"):
        CredentialTrust("sometimes")  # type: ignore[arg-type]


def test_locations_are_bounded_and_expire() -> None:
    """A flood of distinct first segments (a catch-all page answering 2xx) holds at most
    LOCATIONS_LIMIT locations per level, counts its evictions, and everything goes
    LOCATION_TTL after its last evidence."""
    index = RequestIndex()
    flood = [req(i * 0.001, f"/p{i}/x", host=f"h{i}.example") for i in range(LOCATIONS_LIMIT + 50)]
    index.facts(flood, None)
    trust = index.trust
    assert trust.locations() == 2 * LOCATIONS_LIMIT
    assert trust.evicted() == 2 * 50
    assert trust.expire(T0 + LOCATION_TTL + 100) == 2 * LOCATIONS_LIMIT
    assert trust.locations() == 0


def test_a_busy_location_survives_a_flood() -> None:
    """Second-chance eviction: the /api location, in use during the flood, keeps its
    evidence, so the flood does not clear the doubt on claims sent there."""
    index = RequestIndex()
    events: list[Event] = []
    for i in range(2 * LOCATIONS_LIMIT):
        events.append(req(i * 0.001, f"/p{i}/x"))
        if i % 1000 == 0:
            events.append(req(i * 0.001, "/api/tags", client=OTHER))
    index.facts(events, None)
    assert index.facts([req(100, "/api/pull", user="admin")], None).doubted == frozenset({0})


def _random_events(rng: random.Random, n: int, guarded: bool) -> list[Event]:
    """Requests over a few locations and hosts, timestamps now and then out of order,
    with credentials, 401s and 2xx without credentials mixed; an sshd event now and then.
    ``guarded``: on model calls (``/pull``, guarded), inference calls and other paths,
    from a few clients (two of one IPv6 /64)."""
    events: list[Event] = []
    ts = 0.0
    clients = (ATTACKER, OTHER, "192.0.2.9", "2001:db8::1", "2001:db8::2")
    for _ in range(n):
        ts += rng.uniform(-2.0, 60.0)
        if rng.random() < 0.03:
            events.append(SshEvent(T0 + ts, "ssh", OTHER, SshKind.FAILED_PASSWORD, "root", 22))
            continue
        who = rng.random()
        segment = rng.choice(("api", "v1", "ollama", "static"))
        if guarded:
            path = f"/{segment}{rng.choice(('', '', '1'))}/{rng.choice(('pull', 'chat', 'x'))}"
        else:
            path = f"/{segment}{rng.randrange(12)}/x"
        events.append(
            req(
                ts,
                path,
                rng.choice((200, 200, 200, 204, 302, 401, 403, 404)),
                client=rng.choice(clients) if guarded else ATTACKER,
                user="u" if who < 0.3 else None,
                key_id="k" if 0.3 <= who < 0.4 else None,
                host=rng.choice((None, "a.example", "b.example")),
            )
        )
    return events


@pytest.mark.parametrize("guarded", [False, True])
@pytest.mark.parametrize("evicting", [True, False])
def test_any_batching_gives_the_doubts_of_one_event_at_a_time(
    monkeypatch: pytest.MonkeyPatch, evicting: bool, guarded: bool
) -> None:
    """Random traffic in random batches, times out of order, tables that evict (20
    locations, 6 with the fewer of a guarded run) or not (1000), with a guarded reader or
    none: the same doubted requests, locations and evictions as one event per batch (the
    shortcuts for settled claims and for batches with no claim to judge included)."""
    limit = (6 if guarded else 20) if evicting else 1000
    monkeypatch.setattr(shared_module, "LOCATIONS_LIMIT", limit)
    refused = 0
    for seed in range(30):
        rng = random.Random(seed)
        events = _random_events(rng, 600, guarded)
        whole, single = RequestIndex(), RequestIndex()
        if guarded:
            for index in (whole, single):
                index.register(lambda path: path.endswith("/pull"), guarded=True)
        got: set[int] = set()
        at = 0
        while at < len(events):
            size = rng.choice((1, 5, 50, 300))
            got |= {at + i for i in whole.facts(events[at : at + size], None).doubted}
            at += size
        want = {i for i, e in enumerate(events) if single.facts([e], None).doubted}
        assert got == want, seed
        assert whole.trust.locations() == single.trust.locations()
        assert whole.trust.evicted() == single.trust.evicted()
        assert (whole.trust.evicted() > 0) is evicting
        assert whole.trust.doubted == single.trust.doubted > 0
        refused += len(whole.trust._guard_paths) + whole.trust._guard_paths.evicted
    assert (refused > 0) is guarded


def test_http_auth_is_not_forgiven_by_an_unchecked_login() -> None:
    """Slow 401s at a checked location are not wiped by logins the attacker forges where
    nothing checks them (before: every such "login" forgave the long windows)."""
    events: list[Event] = [req(0, "/api/tags", client=OTHER)]  # /api is open
    for i in range(12):
        events.append(req(i * 300.0 + 10, "/login", 401))
        events.append(req(i * 300.0 + 11, "/api/tags", user="alice"))
    found = [f for _, f in HttpAuthDetector(HttpAuthConfig()).observe_many(events)]
    assert [(f.client, f.window) for f in found] == [(ATTACKER, 3600.0)]
    det = HttpAuthDetector(HttpAuthConfig())
    one_by_one = [f for e in events if (f := det.observe(e)) is not None]
    assert one_by_one == found


def test_ai_recon_counts_a_client_with_an_unchecked_user() -> None:
    """A recon sweep with a forged user on an open server is still unauthenticated recon."""
    paths = ["/api/tags", "/api/ps", "/api/version", "/api/show", "/api/config"]
    events: list[Event] = [OPEN] + [req(i + 1, p, user="admin") for i, p in enumerate(paths)]
    det = AiReconDetector(AiReconConfig())
    assert [f.client for _, f in det.observe_many(events)] == [ATTACKER]


def test_credential_stuffing_bans_a_member_whose_login_was_unchecked() -> None:
    """A member of a distributed attack is not spared for a "login" nothing checked."""
    shared = SharedState()
    det = CredentialStuffingDetector(CredentialStuffingConfig(clients_threshold=3), shared=shared)
    events: list[Event] = [
        req(0, "/api/tags", client=OTHER),  # /api is open
        req(1, "/api/tags", client="192.0.2.1", user="root"),  # a "login" there
    ]
    events.append(req(2, "/login", 401, client="192.0.2.1", user="guest"))  # members fail twice
    events += [req(2 + n, "/login", 401, client=f"192.0.2.{n}", user="root") for n in (1, 2, 3)]
    found = [f for _, f in det.observe_many(events)]
    assert "192.0.2.1" in [f.client for f in found if f.severity is Severity.HIGH]


SERVED = req(0, "/api/chat", client=OTHER)
"""Someone's inference call without credentials answered 2xx: /api serves model calls."""


def attacker(found: list[Finding]) -> list[Finding]:
    """The findings about ATTACKER (a model call refused to another client is one too)."""
    return [f for f in found if f.client == ATTACKER]


def doubted(events: list[Event]) -> frozenset[int]:
    """The doubted claims of ``events`` with model_exploit's paths guarded."""
    shared = SharedState()
    ModelExploitDetector(ModelExploitConfig(), shared=shared)
    return shared.requests.facts(events, None).doubted


@pytest.mark.parametrize(
    ("refusal", "refused"),
    [
        ("/api/v1/auths/", "192.0.2.30"),  # Open WebUI's session check, anyone's
        ("/api/generate", ATTACKER),  # the claimant's own: a cloud model, not signed in
        ("/api/push", ATTACKER),  # a model call, but the claimant's own 401
        ("/api/push", "2001:db8:1:2::1"),  # the same, from another address of its /64
    ],
)
def test_a_401_that_does_not_check_model_calls_does_not_license_them(
    refusal: str, refused: str
) -> None:
    """Where model calls are served without credentials, a 401 elsewhere under the
    segment, or one the claimant got itself (its IPv6 /64 counted as one), does not make
    a claimed user an authentication for a model-management call."""
    client = "2001:db8:1:2::99" if ":" in refused else ATTACKER
    events: list[Event] = [
        SERVED,
        req(1, refusal, 401, client=refused),
        req(5, "/api/pull", user="admin", client=client),
    ]
    assert doubted(events) == frozenset({2})


def test_a_forged_user_after_a_401_elsewhere_is_high() -> None:
    """The probe's case: Open WebUI refuses someone under /api, then a pull with a user
    where /api serves chats to anyone is HIGH, in learning mode and with model_admins."""
    events: list[Event] = [
        SERVED,
        req(1, "/api/v1/auths/", 401, client="192.0.2.30"),
        req(5, "/api/pull", user="admin"),
    ]
    for admins in ((), ("admin",)):
        found = run(model_exploit(model_admins=list(admins)), events)
        assert [f.severity for f in found] == [Severity.HIGH]
        assert "user 'admin' claimed, not checked there" in found[0].message


def test_a_model_path_refused_to_others_keeps_its_users_authenticated() -> None:
    """nginx checking the model calls (auth_basic on /api/pull, inference open): once a
    client without credentials was refused a model call there, users count."""
    events: list[Event] = [
        SERVED,
        req(1, "/api/pull", 401, client="192.0.2.30"),
        req(5, "/api/pull", user="admin"),
        req(6, "/api/delete", user="admin"),
    ]
    assert attacker(run(model_exploit(model_admins=["admin"]), events)) == []
    # Refused to the claimant itself, it is no proof.
    own: list[Event] = [SERVED, req(1, "/api/pull", 401), req(5, "/api/delete", user="admin")]
    assert doubted(own) == frozenset({2})
    # On another virtual host that serves model calls, the refusal is no proof.
    hosts: list[Event] = [
        req(0, "/api/chat", client=OTHER, host="open.example.org"),
        req(1, "/api/pull", 401, client="192.0.2.30", host="private.example.org"),
        req(5, "/api/pull", user="admin", host="open.example.org"),
    ]
    assert len(attacker(run(model_exploit(model_admins=["admin"]), hosts))) == 1


def test_a_refusal_to_a_client_with_credentials_licenses_no_model_call() -> None:
    """A guarded 401 to a request with a user (a cloud-model pull with a forged user, a
    wrong password) is no proof that nginx checks the model calls: only auth_basic's
    answer to a request without credentials is."""
    events: list[Event] = [
        SERVED,
        req(1, "/api/pull", 401, client="192.0.2.30", user="admin"),  # x-cloud, forged
        req(2, "/api/pull", 401, client="192.0.2.31", user="admin"),
        req(5, "/api/pull", user="admin", client="192.0.2.32"),
    ]
    assert doubted(events) == frozenset({3})
    found = run(model_exploit(model_admins=["admin"]), events)
    assert [f.severity for f in found if f.client == "192.0.2.32"] == [Severity.HIGH]


@pytest.mark.parametrize("host", [None, "ollama.example.org"])
def test_a_guarded_call_served_without_credentials_outweighs_refusals(host: str | None) -> None:
    """Where a guarded call was answered 2xx without credentials (auth_basic never lets
    one through), guarded 401s to other clients (a cloud model on an Ollama not signed
    in) no longer license a claimed user, before the refusals or after them, in one
    batch or across batches."""
    pull = req(0.5, "/api/pull", client=OTHER, host=host)  # someone's pull, no password
    refusals: list[Event] = [
        req(1, "/api/pull", 401, client="192.0.2.30", host=host),
        req(2, "/api/pull", 401, client="192.0.2.31", host=host),
    ]
    claim = req(5, "/api/pull", user="admin", client="192.0.2.30", host=host)
    served = SERVED._replace(host=host)
    assert doubted([served, pull, *refusals, claim]) == frozenset({4})
    assert doubted([served, *refusals, pull._replace(ts=T0 + 3), claim]) == frozenset({4})
    # Across batches: the claim was settled by the earlier batch's refusals.
    shared = SharedState()
    ModelExploitDetector(ModelExploitConfig(), shared=shared)
    index = shared.requests
    assert index.facts([served, *refusals, claim], None).doubted == frozenset()
    later = claim._replace(ts=T0 + 10)
    assert index.facts([pull._replace(ts=T0 + 6), later], None).doubted == frozenset({1})
    assert index.facts([later._replace(ts=T0 + 20)], None).doubted == frozenset({0})


@pytest.mark.parametrize(
    "let_through",
    [
        req(0, "/api/version", client=OTHER),  # a health check without a password
        req(0, "/api/chat/completions", client=OTHER),  # an Open WebUI session's chat
    ],
)
def test_a_checked_server_that_serves_no_model_call_keeps_its_users(
    let_through: HttpRequest,
) -> None:
    """A server behind auth_basic with a health check let through, or beside Open WebUI
    (whose chats go out without credentials in the log), serves no model call to anyone:
    after a 401 there, the admin's pull still counts; an inference call served to anyone
    there would doubt it."""
    events: list[Event] = [
        let_through,
        req(1, "/api/tags", 401, client="192.0.2.30"),
        req(5, "/api/pull", user="admin"),
    ]
    assert run(model_exploit(model_admins=["admin"]), events) == []
    assert doubted([*events[:2], SERVED._replace(ts=T0 + 2), events[2]]) == frozenset({3})


def test_a_model_path_served_without_credentials_doubts_its_claims() -> None:
    """A model call answered 2xx without credentials shows the model calls open, whatever
    401s other paths of the segment gave."""
    events: list[Event] = [
        req(0, "/api/tags", 401, client="192.0.2.30"),
        req(1, "/api/pull", client=OTHER),  # someone's pull without credentials
        req(5, "/api/pull", user="admin"),
    ]
    found = run(model_exploit(model_admins=["admin"]), events)
    assert [f.client for f in found] == [OTHER, ATTACKER]


def test_only_guarded_claims_need_the_stricter_proof() -> None:
    """A claim on another path (a recon call) is judged as before: a 401 under the
    segment makes it count, model calls served or not."""
    index = RequestIndex()
    index.register(lambda path: path.startswith("/api/pull"), guarded=True)
    events: list[Event] = [
        SERVED,
        req(1, "/api/v1/auths/", 401, client="192.0.2.30"),
        req(5, "/api/tags", user="admin"),
        req(6, "/api/pull", user="admin"),
    ]
    assert index.facts(events, None).doubted == frozenset({3})
