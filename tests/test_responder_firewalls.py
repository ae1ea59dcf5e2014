"""The nftables, ufw and fail2ban responders with a FakeRunner: what each asks the tools.

No root and no tool needed: the command runner is a fake that records every argument
list and stdin. The real-kernel tests are in test_responder_nftables_real.py and
test_responder_firewalls_real.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.commands import CommandResult, CommandTimeoutError, FakeRunner, ToolMissingError
from aisentinel.config import parse_config
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionEngine
from aisentinel.decisions.ledger import Ledger
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity
from aisentinel.responders import REGISTRY
from aisentinel.responders.base import PartialError, ResponderError
from aisentinel.responders.fail2ban import Fail2banConfig, Fail2banResponder
from aisentinel.responders.nftables import NftablesConfig, NftablesResponder
from aisentinel.responders.runner import Operation, ResponderRunner
from aisentinel.responders.ufw import UfwConfig, UfwResponder, parse_status

NOW = 1_800_000_000.0
NFT = ("nft", "-j", "-f", "-")


def ban(target: str, ttl: float = 3600.0, detector: str = "ssh_bruteforce") -> Decision:
    return Decision(
        NOW, Action.BAN, AddressTarget.parse(target), detector, Severity.HIGH, "t",
        ttl=ttl, expires_at=NOW + ttl,
    )  # fmt: skip


def nft_responder(**kw: Any) -> tuple[NftablesResponder, FakeRunner]:
    runner = FakeRunner({NFT: FakeRunner.ok(NFT)})
    config = NftablesConfig(backend="nft", **kw)
    return NftablesResponder(config, clock=FakeClock(NOW), commands=runner), runner


def docs(runner: FakeRunner) -> list[list[dict[str, Any]]]:
    return [json.loads(text)["nftables"] for text in runner.inputs if text]


def elements(cmds: list[dict[str, Any]], op: str) -> list[tuple[str, Any]]:
    out = []
    for cmd in cmds:
        el = cmd.get(op, {}).get("element")
        if el:
            out += [(el["name"], e) for e in el["elem"]]
    return out


def test_registered_and_off_by_default() -> None:
    """nftables, ufw and fail2ban are registered; the default config only dry-runs."""
    assert {"nftables", "ufw", "fail2ban"} <= set(REGISTRY.names())
    assert set(parse_config({}).responders) == {"dryrun"}
    assert set(parse_config({"responders": {"nftables": {}}}).responders) == {"nftables"}


def test_nft_commit_is_one_transaction_with_timeouts_in_own_table() -> None:
    """A batch of adds and deletes is one `nft -j -f -` run; every command names only
    aisentinel's table; each ban carries its remaining TTL as the element timeout."""
    responder, runner = nft_responder()
    responder.add_many([ban("203.0.113.7", 600), ban("2001:db8:1::/64", 60)])
    responder.delete_many([ban("198.51.100.9")])
    responder.commit()
    assert runner.calls == [NFT]
    (cmds,) = docs(runner)
    for cmd in cmds:
        (body,) = cmd.values()
        (obj,) = body.values()
        assert obj.get("table", obj.get("name")) == "aisentinel", cmd
    final = elements([c for c in cmds if c is not cmds[0]], "add")
    assert ("v4_32", {"elem": {"val": "203.0.113.7", "timeout": 600}}) in final
    assert ("v6_64", {"elem": {"val": "2001:db8:1::", "timeout": 60}}) in final
    assert ("v4_32", "198.51.100.9") in elements(cmds, "delete")
    assert responder.held.keys() == {"203.0.113.7", "2001:db8:1::/64"}


def test_nft_chains_hook_input_and_forward_at_the_configured_priority() -> None:
    """Both base chains are declared at `priority`; forward = false leaves the forward one out."""
    responder, runner = nft_responder(priority=-150)
    responder.reconcile([ban("203.0.113.7")])
    chains = [c["add"]["chain"] for c in docs(runner)[0] if "chain" in c.get("add", {})]
    assert {(c["hook"], c["prio"]) for c in chains} == {("input", -150), ("forward", -150)}
    responder, runner = nft_responder(forward=False)
    responder.reconcile([])
    chains = [c["add"]["chain"] for c in docs(runner)[0] if "chain" in c.get("add", {})]
    assert [c["hook"] for c in chains] == ["input"]


def test_nft_network_ban_uses_a_masked_hash_set_not_an_interval_set() -> None:
    """A /24 ban gets its own set (`v4_24`, flags timeout only) and a masked drop rule."""
    responder, runner = nft_responder()
    responder.add_many([ban("10.20.30.0/24")])
    responder.commit()
    (cmds,) = docs(runner)
    sets = {c["add"]["set"]["name"]: c["add"]["set"] for c in cmds if "set" in c.get("add", {})}
    assert sets["v4_24"]["flags"] == ["timeout"]
    assert all("interval" not in s["flags"] for s in sets.values())
    rules = [c["add"]["rule"]["expr"][0]["match"] for c in cmds if "rule" in c.get("add", {})]
    assert {"op": "==", "left": {"&": [{"payload": {"protocol": "ip", "field": "saddr"}},
            "255.255.255.0"]}, "right": "@v4_24"} in rules  # fmt: skip


def test_nft_reconcile_replaces_the_table_with_exactly_the_active_bans() -> None:
    """reconcile: one document that deletes and re-creates the table with the active,
    unexpired bans only."""
    responder, runner = nft_responder()
    expired = Decision(NOW - 10, Action.BAN, AddressTarget.parse("192.0.2.1"), "d",
                       Severity.HIGH, "t", ttl=5, expires_at=NOW - 5)  # fmt: skip
    responder.reconcile([ban("203.0.113.7"), expired])
    (cmds,) = docs(runner)
    assert cmds[1] == {"delete": {"table": {"family": "inet", "name": "aisentinel"}}}
    assert [v for _, v in elements(cmds, "add")] == [
        {"elem": {"val": "203.0.113.7", "timeout": 3600}}
    ]
    assert set(responder.held) == {"203.0.113.7"}


def test_nft_adding_reconcile_keeps_the_table_its_elements_and_each_sets_rule() -> None:
    """reconcile_adding (a run whose ledger is not the whole truth): the table is listed,
    never deleted, so the bans in it stay until their kernel timeouts; every set it has
    (a /24 of an earlier run) keeps its drop rule, none wider than min_prefix gets one;
    the active bans are added with their timeouts."""

    def named(name: str) -> dict[str, Any]:
        return {"set": {"family": "inet", "table": "aisentinel", "name": name}}

    listing = json.dumps({"nftables": [named("v4_32"), named("v4_24"), named("v4_0")]})
    runner = FakeRunner({NFT: FakeRunner.ok(NFT, listing)})
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(NOW), commands=runner
    )
    responder.reconcile_adding([ban("203.0.113.7")])
    listed, applied = docs(runner)
    assert listed == [{"list": {"table": {"family": "inet", "name": "aisentinel"}}}]
    assert not [c for c in applied if "table" in c.get("delete", {})]
    matched = {
        expr["match"]["right"]
        for c in applied
        if "rule" in c.get("add", {})
        for expr in c["add"]["rule"]["expr"]
        if "match" in expr
    }
    assert matched == {"@v4_32", "@v4_24", "@v6_64", "@v6_128"}
    assert elements(applied, "add")[-1] == (
        "v4_32",
        {"elem": {"val": "203.0.113.7", "timeout": 3600}},
    )
    assert set(responder.held) == {"203.0.113.7"}


def test_nft_failure_raises_and_runner_retries() -> None:
    """A refused document raises ResponderError with nft's message; the worker retries."""
    runner = FakeRunner(
        {NFT: FakeRunner.ok(NFT, stderr="Error: Operation not permitted", returncode=1)}
    )
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(NOW), commands=runner
    )
    responder.add_many([ban("203.0.113.7")])
    with pytest.raises(ResponderError, match="Operation not permitted"):
        responder.commit()
    assert responder.held == {}
    worker = ResponderRunner([responder], FakeClock(NOW))
    worker.submit(ban("203.0.113.8"))
    worker.tick()
    assert worker.stats()[0].pending == 1


def test_nft_repairs_are_exported_as_a_counter_per_responder() -> None:
    """A table the health check finds damaged and re-creates counts one repair in
    aisentinel_responder_repairs_total{responder="nftables"}, 0 before."""
    clock = FakeClock(NOW)
    responder, _ = nft_responder()
    responder.reconcile([ban("203.0.113.7")])
    worker = ResponderRunner([responder], clock)

    def repairs() -> list[tuple[dict[str, str], float]]:
        return [
            (sample.labels, sample.value)
            for family in worker.collect()
            for sample in family.samples
            if sample.name == "aisentinel_responder_repairs_total"
        ]

    assert repairs() == [({"responder": "nftables"}, 0.0)]
    assert "re-created with 1 bans" in worker.check_health()["nftables"].detail  # no chains
    assert repairs() == [({"responder": "nftables"}, 1.0)]


def test_nft_missing_table_is_repaired_by_health_from_what_it_holds() -> None:
    """health: when `list chain` fails (ruleset flushed) the table is re-created with the
    bans the responder holds, expired ones left out."""
    clock = FakeClock(NOW)
    runner = FakeRunner({NFT: FakeRunner.ok(NFT)})
    responder = NftablesResponder(NftablesConfig(backend="nft"), clock=clock, commands=runner)
    responder.reconcile([ban("203.0.113.7", 3600), ban("203.0.113.8", 10)])
    clock.advance(60)
    runner.answers = {
        NFT: FakeRunner.ok(NFT, stderr="Error: No such file or directory", returncode=1)
    }
    bad = responder.health()
    assert not bad.ok
    runner.answers = {NFT: FakeRunner.ok(NFT)}
    good = responder.health()
    assert good.ok  # the empty listing has no rules: the table is re-created
    assert "re-created with 1 bans" in good.detail
    last = docs(runner)[-1]
    assert [v for _, v in elements(last, "add")] == [
        {"elem": {"val": "203.0.113.7", "timeout": 3540}}
    ]


MISSING_TABLE = "Error: No such file or directory"


def test_nft_a_table_never_made_is_no_damage_to_health_or_a_first_commit() -> None:
    """A responder just enabled (its first reconcile still queued) that finds no table
    neither repairs nor counts it: health says it is not made yet, without a warning;
    a commit finding no table makes it, uncounted."""
    clock = FakeClock(NOW)
    runner = FakeRunner({NFT: FakeRunner.ok(NFT, stderr=MISSING_TABLE, returncode=1)})
    responder = NftablesResponder(NftablesConfig(backend="nft"), clock=clock, commands=runner)
    with capture_logs() as logs:
        health = responder.health()
        assert not health.ok
        assert health.detail == "table inet aisentinel not made yet (the first reconcile makes it)"
        assert responder.repairs == 0
        assert len(runner.calls) == 1  # the listing only: nothing re-created
        runner.answers = {NFT: FakeRunner.ok(NFT, stderr=MISSING_TABLE, returncode=1)}
        responder.add_many([ban("203.0.113.7")])
        with pytest.raises(ResponderError):  # nft keeps failing: nothing made
            responder.commit()
        runner.answers = {NFT: FakeRunner.ok(NFT)}
        responder.reconcile([ban("203.0.113.7")])
    assert responder.repairs == 0
    assert responder.made
    assert not [e for e in logs if e["log_level"] == "warning"]


class ScriptedRunner(FakeRunner):
    """A FakeRunner whose next nft calls get the results queued in ``script``."""

    def __init__(self) -> None:
        super().__init__({NFT: FakeRunner.ok(NFT)})
        self.script: list[CommandResult] = []

    def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
        result = super().run(argv, timeout=timeout, input=input)
        return self.script.pop(0) if self.script else result


def test_nft_a_reconcile_counts_damage_to_the_table_it_made() -> None:
    """`nft flush ruleset` then a reconcile before the next health check: the reconcile
    re-creates the table as before, and logs and counts the repair as health would."""
    runner = ScriptedRunner()
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(NOW), commands=runner
    )
    missing = FakeRunner.ok(NFT, stderr=MISSING_TABLE, returncode=1)
    with capture_logs() as logs:
        responder.reconcile([ban("203.0.113.7")])  # a fresh responder: nothing listed
        assert len(runner.calls) == 1
        assert responder.repairs == 0
        runner.script = [missing]  # the listing finds no table; the re-creation works
        responder.reconcile([ban("203.0.113.7"), ban("203.0.113.8")])
        assert responder.repairs == 1
        runner.script = [missing, missing]  # no table, and it cannot be re-created
        with pytest.raises(ResponderError):
            responder.reconcile([ban("203.0.113.7")])
    assert responder.repairs == 1  # counted once re-created only
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == [
        "nftables table damaged (flushed or changed by hand?); re-creating it with every ban held"
    ] * 2
    assert warnings[0]["reason"].endswith("(found by a reconcile)")
    assert warnings[0]["bans"] == 2
    assert [v for _, v in elements(docs(runner)[2], "add")] == [
        {"elem": {"val": "203.0.113.7", "timeout": 3600}},
        {"elem": {"val": "203.0.113.8", "timeout": 3600}},
    ]


@pytest.mark.parametrize("target", ["0.0.0.0/0", "10.0.0.0/7", "::/0", "2001::/16"])
def test_nft_refuses_networks_too_wide_at_the_last_moment(target: str) -> None:
    """A network wider than min_prefix4/min_prefix6 never reaches nft, even as a valid
    target, and the commit says it refused it for good (PartialError)."""
    responder, runner = nft_responder()
    responder.add_many([ban(target)])
    with pytest.raises(PartialError) as err:
        responder.commit()
    assert err.value.refused == {target}
    assert not err.value.failed
    assert runner.calls == []
    assert responder.refused == 1


def test_nft_refused_ban_is_reported_not_enforced_and_given_up_once() -> None:
    """With min_prefix6 = 56 a /48 ban is refused: the batch's other ban is written, the
    /48 is reported not enforced ("given up: refused by the backend") and counted given
    up once, whether its add or the reconciles after it met the refusal."""
    clock = FakeClock(NOW)
    responder, runner = nft_responder(min_prefix6=56)
    responder.clock = clock
    worker = ResponderRunner([responder], clock)
    host, wide = ban("203.0.113.7"), ban("2001:db8:1::/48")
    worker.submit(host)
    worker.submit(wide)
    worker.tick()
    assert [e for _, e in elements(docs(runner)[-1], "add")][-1] == {
        "elem": {"val": "203.0.113.7", "timeout": 3600}
    }
    assert "2001:db8:1::" not in runner.inputs[-1]
    assert worker.unenforced(host) == []
    assert worker.unenforced(wide) == ["nftables: given up: refused by the backend"]
    for _ in range(2):
        worker.reconcile([host, wide])
        worker.tick()
        assert worker.unenforced(host) == []
        assert worker.unenforced(wide) == ["nftables: given up: refused by the backend"]
    (stats,) = worker.stats()
    assert (stats.given_up[Operation.ADD], stats.given_up[Operation.RECONCILE]) == (1, 0)
    assert stats.ok[Operation.RECONCILE] == 2
    assert responder.refusal(wide.target.network) == (  # type: ignore[union-attr]
        "network wider than /56 (responders.nftables.min_prefix6)"
    )


def _refusal_lines(logs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["log_level"], e["event"])
        for e in logs
        if e["log_level"] != "debug"
        and ("refused a target" in e["event"] or "refused before" in e["event"])
    ]


def test_nft_refused_ban_is_an_error_once_then_one_warning_per_reconcile() -> None:
    """A ban refused for good is logged as an error once; each later reconcile that meets
    it again logs one warning line for all of them, and a reload keeps that."""
    clock = FakeClock(NOW)
    responder, _ = nft_responder(min_prefix6=64)
    responder.clock = clock
    worker = ResponderRunner([responder], clock)
    active = [ban(f"2001:db8:{i:x}::/48") for i in range(3)] + [ban("192.0.2.1")]
    with capture_logs() as logs:
        worker.reconcile(active)
        worker.tick()
    assert _refusal_lines(logs) == [("error", "nftables responder refused a target")] * 3
    for _ in range(2):
        with capture_logs() as logs:
            worker.reconcile(active)
            worker.tick()
        assert _refusal_lines(logs) == [
            ("warning", "nftables reconcile met bans it refused before, still not enforced")
        ]
        assert [e["refused"] for e in logs if "refused before" in e["event"]] == [3]
    replacement, _ = nft_responder(min_prefix6=64)
    replacement.clock = clock
    reloaded = ResponderRunner([replacement], clock)
    reloaded.carry_over(worker)
    with capture_logs() as logs:
        reloaded.reconcile(active)
        reloaded.tick()
    assert [level for level, _ in _refusal_lines(logs)] == ["warning"]
    assert reloaded.unenforced(active[0]) == ["nftables: given up: refused by the backend"]
    (stats,) = reloaded.stats()
    assert stats.given_up[Operation.RECONCILE] == 3


def test_nft_lift_of_a_refused_ban_is_skipped_silently() -> None:
    """Lifting a ban nftables refused (never written) logs no refusal and runs nothing."""
    responder, runner = nft_responder(min_prefix6=64)
    with capture_logs() as logs:
        responder.delete_many([ban("2001:db8:1::/48")])
        responder.commit()
    assert _refusal_lines(logs) == []
    assert runner.calls == []
    assert responder.refused == 0


def test_fail2ban_batches_into_one_client_run_per_direction() -> None:
    """Adds are one `set JAIL banip A B`, deletes one `unbanip`, over the configured socket."""
    banip = (
        "fail2ban-client",
        "-s",
        "/run/f.sock",
        "set",
        "aisentinel",
        "banip",
        "203.0.113.7",
        "2001:db8::/64",
    )
    unban = ("fail2ban-client", "-s", "/run/f.sock", "set", "aisentinel", "unbanip", "198.51.100.9")
    runner = FakeRunner({banip: FakeRunner.ok(banip), unban: FakeRunner.ok(unban)})
    responder = Fail2banResponder(
        Fail2banConfig(socket="/run/f.sock"), clock=FakeClock(NOW), commands=runner
    )  # type: ignore[arg-type]
    responder.add_many([ban("203.0.113.7"), ban("2001:db8::/64")])
    responder.delete_many([ban("198.51.100.9")])
    responder.commit()
    assert runner.calls == [unban, banip]


def test_fail2ban_reconcile_reads_the_jail_and_fixes_both_ways() -> None:
    """reconcile: what the jail holds and the ledger does not is unbanned; the missing banned."""
    get = ("fail2ban-client", "get", "aisentinel", "banip")
    unban = ("fail2ban-client", "set", "aisentinel", "unbanip", "192.0.2.66")
    add = ("fail2ban-client", "set", "aisentinel", "banip", "203.0.113.8")
    runner = FakeRunner({
        get: FakeRunner.ok(get, "203.0.113.7 192.0.2.66\n"),
        unban: FakeRunner.ok(unban),
        add: FakeRunner.ok(add),
    })  # fmt: skip
    responder = Fail2banResponder(Fail2banConfig(), clock=FakeClock(NOW), commands=runner)
    responder.reconcile([ban("203.0.113.7"), ban("203.0.113.8")])
    assert runner.calls == [get, unban, add]


def test_fail2ban_missing_jail_is_named_with_the_fix() -> None:
    """fail2ban's raw `NOK: ('JAIL',)` becomes "jail JAIL does not exist" naming the jail
    file to install, in the error and the health detail."""
    nok = "2026-12-07 22:02:55,250 fail2ban [30790]: ERROR   NOK: ('nojail',)\n"
    get = ("fail2ban-client", "get", "nojail", "banip")
    status = ("fail2ban-client", "status", "nojail")
    runner = FakeRunner({
        get: FakeRunner.ok(get, stderr=nok, returncode=255),
        status: FakeRunner.ok(status, stderr=nok, returncode=255),
    })  # fmt: skip
    responder = Fail2banResponder(
        Fail2banConfig(jail="nojail"), clock=FakeClock(NOW), commands=runner
    )
    with pytest.raises(ResponderError, match="jail nojail does not exist in fail2ban") as err:
        responder.reconcile([ban("203.0.113.7")])
    assert "jail.d/aisentinel.conf" in str(err.value)
    assert "NOK" not in str(err.value)
    assert "jail nojail does not exist" in responder.health().detail


def test_fail2ban_adding_reconcile_bans_the_missing_and_unbans_nothing() -> None:
    """reconcile_adding: what the jail holds and the ledger does not stays banned (it has
    no time of its own; a reconcile on a healthy ledger lifts it later)."""
    get = ("fail2ban-client", "get", "aisentinel", "banip")
    add = ("fail2ban-client", "set", "aisentinel", "banip", "203.0.113.8")
    runner = FakeRunner(
        {get: FakeRunner.ok(get, "203.0.113.7 192.0.2.66\n"), add: FakeRunner.ok(add)}
    )
    responder = Fail2banResponder(Fail2banConfig(), clock=FakeClock(NOW), commands=runner)
    responder.reconcile_adding([ban("203.0.113.7"), ban("203.0.113.8")])
    assert runner.calls == [get, add]


STATUS = """Status: active

     To                         Action      From
     --                         ------      ----
[ 1] Anywhere                   DENY FWD    203.0.113.7                # aisentinel ssh_bruteforce
[ 2] Anywhere                   DENY IN     203.0.113.7                # aisentinel ssh_bruteforce
[ 3] 22/tcp                     ALLOW IN    Anywhere
[ 4] Anywhere                   DENY IN     192.0.2.50                 # admin's own block
[ 5] Anywhere                   DENY IN     192.0.2.66                 # aisentinel scanning
[ 6] Anywhere (v6)              DENY IN     2001:db8::/64              # aisentinel ban
[ 7] Anywhere                   DENY IN     192.0.2.51
"""
STATUS_CALL = ("ufw", "status", "numbered")
V6_OFF = FakeRunner.ok(("ufw",), stderr="ERROR: IPv6 support not enabled\n", returncode=1)


class UfwFake(FakeRunner):
    """ufw and conntrack that succeed at everything not in the table; status lists ``status``."""

    def __init__(self, status: str = STATUS, answers: dict[tuple[str, ...], Any] | None = None):
        super().__init__({STATUS_CALL: FakeRunner.ok(STATUS_CALL, status), **(answers or {})})

    def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
        if tuple(argv) not in self.answers and argv[0] in ("ufw", "conntrack"):
            self.calls.append(tuple(argv))
            self.inputs.append(input)
            return FakeRunner.ok(argv)
        return super().run(argv, timeout=timeout, input=input)


def ufw(*args: str, route: bool = False) -> tuple[str, ...]:
    return ("ufw", *(["route"] if route else []), *args)


def deny(op: str, target: str, comment: str = "aisentinel ssh_bruteforce", *, route: bool = False):
    return ufw(op, "deny", "from", target, "comment", comment, route=route)


def ufw_responder(runner: FakeRunner, **kw: Any) -> UfwResponder:
    return UfwResponder(UfwConfig(**kw), clock=FakeClock(NOW), commands=runner)


def test_ufw_prepends_commented_rules_and_deletes_them() -> None:
    """A ban is `ufw [route] prepend deny from A comment 'aisentinel DETECTOR'` and the
    source's conntrack entries cut; a lift deletes the rule by the comment it has."""
    runner = UfwFake()
    responder = ufw_responder(runner)
    responder.add_many([ban("198.51.100.9")])
    responder.delete_many([ban("192.0.2.66")])
    responder.commit()
    assert runner.calls == [
        STATUS_CALL,
        deny("delete", "192.0.2.66", "aisentinel scanning"),
        deny("prepend", "198.51.100.9"),
        deny("prepend", "198.51.100.9", route=True),
        ("conntrack", "-D", "-s", "198.51.100.9"),
    ]


def test_ufw_route_false_adds_only_the_input_rule_and_lifts_both() -> None:
    """`route = false`: a ban is the input rule only; a lift still deletes a route rule
    of aisentinel's left from when it was on."""
    runner = UfwFake()
    responder = ufw_responder(runner, route=False, cut_connections=False)
    responder.add_many([ban("198.51.100.9")])
    responder.delete_many([ban("203.0.113.7")])
    responder.commit()
    assert runner.calls == [
        STATUS_CALL,
        deny("delete", "203.0.113.7"),
        deny("delete", "203.0.113.7", route=True),
        deny("prepend", "198.51.100.9"),
    ]


def test_ufw_network_ban_cuts_the_networks_connections() -> None:
    """An IPv6 /64 ban deletes the conntrack entries of the whole network (a source mask)."""
    runner = UfwFake()
    ufw_responder(runner, route=False).reconcile_adding([ban("2001:db8:5::/64")])
    assert runner.calls[-1] == (
        "conntrack", "-D", "-s", "2001:db8:5::", "--mask-src", "ffff:ffff:ffff:ffff::",
    )  # fmt: skip


def test_ufw_without_conntrack_still_bans_and_warns_once() -> None:
    """conntrack missing: every ban still succeeds, one warning, and health says the
    established connections are not cut."""

    class NoConntrack(UfwFake):
        def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
            if argv[0] == "conntrack":
                raise ToolMissingError("conntrack is not installed")
            return super().run(argv, timeout=timeout, input=input)

    runner = NoConntrack(
        answers={("ufw", "status"): FakeRunner.ok(("ufw", "status"), "Status: active\n")}
    )
    responder = ufw_responder(runner, route=False, defaults_file="/nonexistent")
    with capture_logs() as logs:
        for target in ("198.51.100.9", "198.51.100.10"):
            responder.add_many([ban(target)])
            responder.commit()
    assert deny("prepend", "198.51.100.10") in runner.calls
    assert len([e for e in logs if "conntrack" in e["event"]]) == 1
    health = responder.health()
    assert health.ok
    assert "not cut" in health.detail


def test_ufw_lift_leaves_the_operators_own_deny_rule() -> None:
    """When a ban ends, the operator's deny rule for that address (commented or not, which
    ufw kept instead of inserting aisentinel's identical one) is not deleted."""
    runner = UfwFake()
    responder = ufw_responder(runner)
    responder.delete_many([ban("192.0.2.50"), ban("192.0.2.51"), ban("198.51.100.77")])
    responder.commit()
    assert runner.calls == [STATUS_CALL]


SHADOWED = """Status: active

     To                         Action      From
     --                         ------      ----
[ 1] Anywhere                   DENY FWD    10.77.0.19                 # aisentinel manual
[ 2] Anywhere                   DENY IN     10.77.0.19                 # aisentinel manual
[ 3] 22/tcp                     DENY IN     10.77.0.19                 # ops: old bastion
[ 4] 80                         DENY FWD    10.77.0.19                 # aisentinel-like ops rule
"""


def test_ufw_operators_commented_port_rule_does_not_hide_aisentinels_rule() -> None:
    """The operator's own commented deny rule for the same source (a port rule, listed
    after aisentinel's) neither hides aisentinel's rules from a lift, a reconcile or a
    withdraw, nor is ever deleted."""
    ours = [deny("delete", "10.77.0.19", "aisentinel manual", route=r) for r in (False, True)]
    runner = UfwFake(SHADOWED)
    responder = ufw_responder(runner)
    assert responder.held() == {"10.77.0.19"}
    runner.calls.clear()
    responder.delete_many([ban("10.77.0.19", detector="manual")])
    responder.commit()
    assert sorted(runner.calls[1:]) == sorted(ours)
    for act in (lambda: responder.reconcile([]), responder.withdraw):
        runner.calls.clear()
        act()
        assert sorted(runner.calls[1:]) == sorted(ours)


def test_ufw_lift_while_inactive_names_aisentinels_comment() -> None:
    """With ufw inactive (no rules listed) a lift deletes only rules with the comment
    aisentinel gave them."""
    runner = UfwFake("Status: inactive\n")
    responder = ufw_responder(runner)
    responder.delete_many([ban("192.0.2.66", detector="scanning")])
    responder.commit()
    assert runner.calls == [
        STATUS_CALL,
        deny("delete", "192.0.2.66", "aisentinel scanning"),
        deny("delete", "192.0.2.66", "aisentinel scanning", route=True),
    ]


def test_ufw_reconcile_removes_only_its_own_unknown_rules() -> None:
    """Rules commented `aisentinel` that the ledger lacks go; the admin's deny rule stays;
    the missing route rule of a held ban is added."""
    rules = parse_status(STATUS)
    assert [r.comment for r in rules if r.source == "192.0.2.50"] == ["admin's own block"]
    runner = UfwFake()
    responder = ufw_responder(runner, cut_connections=False)
    responder.reconcile([ban("203.0.113.7"), ban("2001:db8::/64", detector="ban")])
    assert runner.calls == [
        STATUS_CALL,
        deny("delete", "192.0.2.66", "aisentinel scanning"),
        deny("prepend", "2001:db8::/64", "aisentinel ban", route=True),
    ]


def test_ufw_adding_reconcile_adds_the_missing_and_deletes_no_rule() -> None:
    """reconcile_adding: aisentinel's rules the ledger lacks stay; the missing one is added."""
    runner = UfwFake()
    responder = ufw_responder(runner, route=False, cut_connections=False)
    responder.reconcile_adding([ban("203.0.113.7"), ban("198.51.100.9")])
    assert runner.calls == [STATUS_CALL, deny("prepend", "198.51.100.9")]


def test_ufw_timeout_is_a_responder_error_and_stops_the_batch() -> None:
    """A hung ufw surfaces as ResponderError naming every target of the batch (retried),
    never a raw exception, and the rules after it are not tried (each would hang too)."""
    runner = UfwFake(
        answers={deny("prepend", "203.0.113.7"): CommandTimeoutError("ufw ran past 30s")}
    )
    responder = ufw_responder(runner)
    responder.add_many([ban("203.0.113.7"), ban("203.0.113.8")])
    with pytest.raises(PartialError, match="ran past") as err:
        responder.commit()
    assert err.value.failed == {"203.0.113.7", "203.0.113.8"}
    assert runner.calls == [deny("prepend", "203.0.113.7")]


def test_ufw_one_refused_rule_does_not_hold_back_the_others(tmp_path: Any) -> None:
    """With ufw's IPv6 off, an IPv6 ban is refused for good while every IPv4 ban of the
    batch and of the reconcile (sorted after it) is applied; one error line; health
    stays ok (the IPv4 bans are enforced) and says IPv6 is disabled."""
    defaults = tmp_path / "ufw"
    defaults.write_text('IPV6=no\nDEFAULT_INPUT_POLICY="DROP"\n')
    v6 = [deny("prepend", "2001:db8::/64", route=r) for r in (False, True)]
    runner = UfwFake(
        "Status: active\n",
        {
            **dict.fromkeys(v6, V6_OFF),
            ("ufw", "status"): FakeRunner.ok(("ufw", "status"), "Status: active\n"),
        },
    )
    responder = ufw_responder(runner, cut_connections=False, defaults_file=defaults)
    responder.add_many([ban("2001:db8::/64"), ban("203.0.113.5"), ban("198.51.100.5")])
    with capture_logs() as logs, pytest.raises(PartialError) as err:
        responder.commit()
    assert err.value.refused == {"2001:db8::/64"}
    assert not err.value.failed
    for target in ("203.0.113.5", "198.51.100.5"):
        assert deny("prepend", target) in runner.calls
        assert deny("prepend", target, route=True) in runner.calls
    runner.calls.clear()
    with capture_logs() as again, pytest.raises(PartialError):
        responder.reconcile([ban("2001:db8::/64"), ban("203.0.113.5")])
    assert deny("prepend", "203.0.113.5") in runner.calls
    assert len([e for e in [*logs, *again] if "IPv6" in e["event"]]) == 1
    health = responder.health()
    assert health.ok
    assert "IPv6 disabled" in health.detail


def v6_off_fake() -> UfwFake:
    """ufw with IPv6 off: it refuses the IPv6 rules of 2001:db8::/64; status is active."""
    v6 = [deny("prepend", "2001:db8::/64", route=r) for r in (False, True)]
    return UfwFake(
        "Status: active\n",
        {
            **dict.fromkeys(v6, V6_OFF),
            ("ufw", "status"): FakeRunner.ok(("ufw", "status"), "Status: active\n"),
        },
    )


def test_ufw_refused_ipv6_ban_leaves_the_ipv4_bans_enforced(tmp_path: Any) -> None:
    """One IPv6 ban refused (IPv6 off): only that ban is reported not enforced, counted
    given up once; the IPv4 bans are not marked failing, whether the add or a reconcile
    met the refusal."""
    defaults = tmp_path / "ufw"
    defaults.write_text("IPV6=no\n")
    clock = FakeClock(NOW)
    fake = v6_off_fake()
    responder = UfwResponder(
        UfwConfig(cut_connections=False, defaults_file=defaults), clock=clock, commands=fake
    )
    worker = ResponderRunner([responder], clock)
    v4, v6 = ban("203.0.113.5"), ban("2001:db8::/64")
    worker.submit(v4)
    worker.submit(v6)
    worker.tick()
    assert worker.unenforced(v4) == []
    assert worker.unenforced(v6) == ["ufw: given up: refused by the backend"]
    for _ in range(2):  # each reconcile meets it refused: counted once
        worker.reconcile([v4, v6])
        worker.tick()
        assert worker.unenforced(v4) == []
        assert worker.unenforced(v6) == ["ufw: given up: refused by the backend"]
    (stats,) = worker.stats()
    assert (stats.given_up[Operation.ADD], stats.given_up[Operation.RECONCILE]) == (1, 0)
    assert stats.health is not None
    assert stats.health.ok


def test_ufw_reconcile_counts_a_refused_ipv6_ban_given_up_once(tmp_path: Any) -> None:
    """A reconcile that meets an IPv6 ban refused counts it given up (as the docs say),
    once: the next reconcile that meets it again does not count it again."""
    defaults = tmp_path / "ufw"
    defaults.write_text("IPV6=no\n")
    clock = FakeClock(NOW)
    responder = UfwResponder(
        UfwConfig(cut_connections=False, defaults_file=defaults),
        clock=clock,
        commands=v6_off_fake(),
    )
    worker = ResponderRunner([responder], clock)
    for _ in range(2):
        worker.reconcile([ban("2001:db8::/64"), ban("203.0.113.5")])
        worker.tick()
    (stats,) = worker.stats()
    assert (stats.given_up[Operation.RECONCILE], stats.ok[Operation.RECONCILE]) == (1, 2)
    assert worker.unenforced(ban("2001:db8::/64")) == ["ufw: given up: refused by the backend"]


def test_ufw_ipv6_known_off_is_not_asked_again_until_ipv6_is_on(tmp_path: Any) -> None:
    """Once ufw refused an IPv6 rule, later IPv6 bans (batch or reconcile) are refused
    without a ufw call; once its defaults say IPV6=yes they are tried again."""
    defaults = tmp_path / "ufw"
    defaults.write_text("IPV6=no\n")
    fake = v6_off_fake()
    responder = ufw_responder(fake, cut_connections=False, defaults_file=defaults)
    responder.add_many([ban("2001:db8::/64")])
    with pytest.raises(PartialError):
        responder.commit()
    assert fake.calls == [deny("prepend", "2001:db8::/64")]
    fake.calls.clear()
    responder.add_many([ban("2001:db8::/64"), ban("203.0.113.5")])
    with pytest.raises(PartialError) as err:
        responder.commit()
    assert err.value.refused == {"2001:db8::/64"}
    with pytest.raises(PartialError) as err:
        responder.reconcile([ban("2001:db8::/64")])
    assert err.value.refused == {"2001:db8::/64"}
    assert not [call for call in fake.calls if "2001:db8::/64" in call]
    defaults.write_text("IPV6=yes\n")
    with pytest.raises(PartialError):
        responder.reconcile([ban("2001:db8::/64")])
    assert deny("prepend", "2001:db8::/64") in fake.calls


ODD = """Status: active

     To                         Action      From
     --                         ------      ----
[ 1] Anywhere                   DENY IN     198.51.100.9/tcp           # aisentinel manual
[ 2] Anywhere                   DENY IN     Anywhere                   # aisentinel everyone
[ 3] Anywhere (v6)              DENY IN     Anywhere (v6)              # aisentinel everyone
[ 4] Anywhere                   DENY IN     198.51.100.10              # aisentinel manual
[ 5] Anywhere (v6)              DENY FWD    2001:db8::/64              # aisentinel ban
"""


def test_ufw_rule_whose_source_is_no_address_is_the_operators() -> None:
    """An operator's rule commented `aisentinel ...` whose source is not an address (a
    `proto` rule's `ADDR/tcp`, `Anywhere`) is not aisentinel's: never held, never deleted
    by a reconcile or a withdraw."""
    fake = UfwFake(ODD)
    responder = ufw_responder(fake)
    assert responder.held() == {"198.51.100.10", "2001:db8::/64"}
    ours = [
        deny("delete", "198.51.100.10", "aisentinel manual"),
        deny("delete", "2001:db8::/64", "aisentinel ban", route=True),
    ]
    for act in (lambda: responder.reconcile([]), responder.withdraw):
        fake.calls.clear()
        act()
        assert sorted(fake.calls[1:]) == sorted(ours)


def test_ufw_withdraw_goes_on_past_a_failed_delete_and_reports_it() -> None:
    """A delete ufw refuses does not stop the withdrawal: every other rule of
    aisentinel's is deleted, and the one left is raised at the end."""
    refused = FakeRunner.ok(("ufw",), stderr="ERROR: Could not delete\n", returncode=1)
    first = deny("delete", "192.0.2.66", "aisentinel scanning")
    fake = UfwFake(STATUS, {first: refused})
    responder = ufw_responder(fake)
    left = r"3 deny rules .* deleted, 1 left \(from 192.0.2.66;"
    with pytest.raises(PartialError, match=left) as err:
        responder.withdraw()
    assert err.value.failed == {"192.0.2.66"}
    assert sorted(fake.calls[1:]) == sorted(
        [
            first,
            deny("delete", "2001:db8::/64", "aisentinel ban"),
            deny("delete", "203.0.113.7"),
            deny("delete", "203.0.113.7", route=True),
        ]
    )


def test_ufw_hung_conntrack_skips_the_other_cuts_of_the_batch() -> None:
    """conntrack giving no answer in time costs one timeout per batch, not one per ban:
    the other cuts of the batch are skipped, with one warning; every ban is applied."""

    class HungConntrack(UfwFake):
        def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
            if argv[0] == "conntrack":
                self.calls.append(tuple(argv))
                raise CommandTimeoutError("conntrack ran past 30s")
            return super().run(argv, timeout=timeout, input=input)

    fake = HungConntrack()
    responder = ufw_responder(fake, route=False)
    targets = ("198.51.100.1", "198.51.100.2", "198.51.100.3")
    responder.add_many([ban(t) for t in targets])
    with capture_logs() as logs:
        responder.commit()
    assert [call for call in fake.calls if call[0] == "conntrack"] == [
        ("conntrack", "-D", "-s", "198.51.100.1")
    ]
    assert all(deny("prepend", t) in fake.calls for t in targets)
    warnings = [e for e in logs if "conntrack" in e["event"]]
    assert len(warnings) == 1
    assert "2 more sources skipped" in warnings[0]["error"]


def held_bans(n: int) -> tuple[list[str], str]:
    """``n`` IPv4 bans and a ufw status holding only their input rules (no route rule:
    as an upgrade to `route = true` finds them)."""
    targets = [f"10.0.{i // 256}.{i % 256}" for i in range(1, n + 1)]
    lines = "".join(
        f"[{i:2d}] Anywhere                   DENY IN     {t:<26} # aisentinel ssh_bruteforce\n"
        for i, t in enumerate(targets, 1)
    )
    return targets, f"Status: active\n\n     To  Action  From\n     --  ------  ----\n{lines}"


class SlowUfw(UfwFake):
    """ufw taking ``per_call`` seconds of the fake clock per run (0.6 s: ~2,000 rules)."""

    def __init__(self, clock: FakeClock, status: str, per_call: float = 0.6) -> None:
        super().__init__(status)
        self.clock, self.per_call = clock, per_call
        self.on_call: Any = None

    def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
        self.clock.advance(self.per_call)
        if self.on_call is not None:
            self.on_call(argv)
        return super().run(argv, timeout=timeout, input=input)


def test_ufw_new_ban_waits_one_reconcile_slice_not_the_whole_repair() -> None:
    """A reconcile adding 500 missing route rules (0.6 s per ufw call) is made in slices
    of about 5 s: a ban submitted during the first slice is applied right after it, before
    the rest of the repair, which then goes on at once (no back-off) and ends with every
    missing rule added once."""
    clock = FakeClock(NOW)
    targets, status = held_bans(500)
    fake = SlowUfw(clock, status)
    responder = UfwResponder(UfwConfig(cut_connections=False), clock=clock, commands=fake)
    worker = ResponderRunner([responder], clock)
    new = ban("198.51.100.77")

    def submit_during_the_repair(argv: Any) -> None:
        if argv[1] == "route" and fake.on_call is not None:
            fake.on_call = None
            worker.submit(new)

    fake.on_call = submit_during_the_repair
    worker.reconcile([ban(t) for t in targets])
    worker.tick()  # the first slice
    worker.tick()  # the new ban, then the next slice
    new_at = fake.calls.index(deny("prepend", "198.51.100.77"))
    repaired_before = [c for c in fake.calls[:new_at] if c[1] == "route"]
    assert 0 < len(repaired_before) <= 5.0 / 0.6 + 1
    for _ in range(200):
        if not worker.pending():
            break
        worker.tick()
    routes = [c[5] for c in fake.calls if c[1] == "route" and c[5] != "198.51.100.77"]
    assert sorted(routes) == sorted(targets)
    (stats,) = worker.stats()
    assert (stats.ok[Operation.RECONCILE], stats.failed[Operation.RECONCILE]) == (1, 0)
    assert (stats.ok[Operation.ADD], stats.retried[Operation.RECONCILE]) == (1, 0)


HOSTILE = ["1.2.3.4;reboot", "$(id)", "-h", "x" * 10240, "0.0.0.0/0", "0.0.0.0", "::", "`id`",
           "1.2.3.4 --help", "255.255.255.255", "224.0.0.1", "../../etc/passwd"]  # fmt: skip


@pytest.mark.parametrize("text", HOSTILE, ids=lambda t: t[:16])
def test_hostile_addresses_never_reach_a_command(text: str, tmp_path: Any) -> None:
    """An attacker-chosen "address" is refused before the responders: no tool is run."""
    runner = FakeRunner()
    clock = FakeClock(NOW)
    responders = [
        NftablesResponder(NftablesConfig(backend="nft"), clock=clock, commands=runner),
        UfwResponder(UfwConfig(), clock=clock, commands=runner),
        Fail2banResponder(Fail2banConfig(), clock=clock, commands=runner),
    ]
    worker = ResponderRunner(responders, clock)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite3", clock), clock)
    finding = Finding(NOW, "ssh_bruteforce", Severity.CRITICAL, text, text, 9, 60.0, "m")
    decision = engine.decide(finding)
    worker.submit(decision)
    worker.tick()
    assert decision.action is not Action.BAN or decision.target is None
    # Only the health probes ran (status/list): no add, no hostile text anywhere.
    assert all(st.ok[op] == 0 for st in worker.stats() for op in st.ok)
    assert not any(text in " ".join(call) for call in runner.calls)
    assert not any('"element"' in (stdin or "") for stdin in runner.inputs)
    assert not any("banip" in call or "prepend" in call for call in runner.calls)


def test_nft_failing_to_list_the_table_is_no_damage_and_no_repair() -> None:
    """A `list table` that nft refuses for another reason than a missing table (no
    permission, a busy netlink) is an nft failure: health is not ok with nft's words, a
    reconcile fails (the worker retries it), and nothing is re-created or counted."""
    runner = ScriptedRunner()
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(NOW), commands=runner
    )
    refused = FakeRunner.ok(NFT, stderr="Error: Operation not permitted", returncode=1)
    with capture_logs() as logs:
        responder.reconcile([ban("203.0.113.7")])
        runner.script = [refused]
        health = responder.health()
        assert not health.ok
        assert "Operation not permitted" in health.detail
        runner.script = [refused]
        with pytest.raises(ResponderError, match="Operation not permitted"):
            responder.reconcile([ban("203.0.113.7")])
    assert len(runner.calls) == 3  # the first reconcile, then the two listings only
    assert responder.repairs == 0
    assert not [e for e in logs if e["log_level"] == "warning"]


def test_nft_a_shorter_manual_ban_keeps_the_longer_element_timeout(tmp_path: Any) -> None:
    """An operator's 10-minute ban of an address banned for 24h writes the 24h's
    remaining time as the nftables element timeout; with replace, the 10 minutes."""
    clock = FakeClock(NOW)
    responder, runner = nft_responder()
    responder.clock = clock
    worker = ResponderRunner([responder], clock)
    engine = DecisionEngine(DecisionsConfig(), Ledger(tmp_path / "l.sqlite3", clock), clock)
    worker.submit(engine.manual_ban("203.0.113.7", 86400.0, "attacker", "ops"))
    worker.tick()
    clock.advance(60)
    worker.submit(engine.manual_ban("203.0.113.7", 600.0, "quick", "ops"))
    worker.tick()
    added = elements(docs(runner)[-1], "add")
    assert ("v4_32", {"elem": {"val": "203.0.113.7", "timeout": 86400 - 60}}) in added
    worker.submit(engine.manual_ban("203.0.113.7", 600.0, "shorten", "ops", replace=True))
    worker.tick()
    added = elements(docs(runner)[-1], "add")
    assert ("v4_32", {"elem": {"val": "203.0.113.7", "timeout": 600}}) in added


def listing(responder: NftablesResponder, sets: dict[str, list[str]]) -> CommandResult:
    """nft's JSON listing of the responder's table, intact, with ``sets``' elements."""
    from aisentinel.responders.nftables import _drop

    items: list[dict[str, Any]] = []
    for hook in ("input", "forward"):
        items.append(
            {"chain": {"name": hook, "type": "filter", "hook": hook, "prio": -200,
                       "policy": "accept"}}
        )  # fmt: skip
        for version, length in sorted(responder.lengths):
            items.append({"rule": {"chain": hook, "expr": _drop(version, length)}})
    for name, elems in sets.items():
        items.append({"set": {"name": name, "elem": [{"elem": {"val": v}} for v in elems]}})
    return FakeRunner.ok(NFT, json.dumps({"nftables": items}))


def test_nft_a_listing_leaving_out_live_bans_is_no_damage() -> None:
    """A table listing that leaves out a ban the next listing of its set shows (the
    kernel expiring other elements meanwhile) is no damage: healthy, nothing re-created
    or counted, no warning; only the set is listed again."""
    runner = ScriptedRunner()
    responder = NftablesResponder(
        NftablesConfig(backend="nft"), clock=FakeClock(NOW), commands=runner
    )
    responder.reconcile([ban("203.0.113.7"), ban("203.0.113.8"), ban("2001:db8::/64")])
    runner.script = [
        listing(responder, {"v4_32": ["203.0.113.7"], "v6_64": ["2001:db8::"]}),
        listing(responder, {"v4_32": ["203.0.113.7", "203.0.113.8"]}),
    ]
    with capture_logs() as logs:
        health = responder.health()
    assert health.ok, health.detail
    assert health.detail.endswith("3 bans in table inet aisentinel")
    assert responder.repairs == 0
    assert not [e for e in logs if e["log_level"] == "warning"]
    relist = docs(runner)[-1]
    assert relist == [{"list": {"set": {"family": "inet", "table": "aisentinel", "name": "v4_32"}}}]


def test_nft_bans_missing_from_every_listing_are_added_back_keeping_the_table() -> None:
    """A ban missing from the table listing and from both listings of its set again
    (`nft flush set`) is added back alone with its remaining time, the table kept (no
    delete), counted as one repair with a warning; a ban 2 s from expiry missing is no
    evidence and is not added."""
    clock = FakeClock(NOW)
    runner = ScriptedRunner()
    responder = NftablesResponder(NftablesConfig(backend="nft"), clock=clock, commands=runner)
    responder.reconcile([ban("203.0.113.7"), ban("203.0.113.8"), ban("203.0.113.9", 62)])
    clock.advance(60)
    gone = listing(responder, {"v4_32": ["203.0.113.7"]})
    runner.script = [gone, gone, gone]
    with capture_logs() as logs:
        health = responder.health()
    assert health.ok, health.detail
    assert health.detail == "1 of the 3 bans held are not in the sets; 1 added back"
    assert responder.repairs == 1
    assert len(runner.calls) == 5  # reconcile, the table listing, 2 set listings, the add
    assert docs(runner)[-1] == [
        {"add": {"element": {"family": "inet", "table": "aisentinel", "name": "v4_32",
                             "elem": [{"elem": {"val": "203.0.113.8", "timeout": 3540}}]}}}
    ]  # fmt: skip
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [w["event"] for w in warnings] == [
        "nftables table damaged (bans missing from its sets: flushed by hand?); adding them back"
    ]


def test_nft_reconcile_timeouts_count_from_after_the_listing_rounded_down() -> None:
    """A reconcile whose table listing takes 5 s writes each element's timeout as the
    whole seconds left after it (3594 of 3600 - 5.5), not as before the listing (3600):
    a reconcile never lengthens a ban."""
    clock = FakeClock(NOW)

    class SlowListing(ScriptedRunner):
        def run(self, argv: Any, *, timeout: float, input: str | None = None) -> CommandResult:
            if input is not None and '"list"' in input:
                clock.advance(5.0)
            return super().run(argv, timeout=timeout, input=input)

    runner = SlowListing()
    responder = NftablesResponder(NftablesConfig(backend="nft"), clock=clock, commands=runner)
    responder.reconcile([ban("203.0.113.7")])
    clock.advance(0.5)
    runner.script = [listing(responder, {"v4_32": ["203.0.113.7"]})]
    responder.reconcile([ban("203.0.113.7")])
    assert [v for _, v in elements(docs(runner)[-1], "add")] == [
        {"elem": {"val": "203.0.113.7", "timeout": 3594}}
    ]
