"""A small model of the host firewall's INPUT filtering, read from ufw, nftables or iptables.

It answers two questions the checks ask: does the firewall drop incoming traffic by
default, for IPv4 and for IPv6 separately, and who may reach a given TCP port over
either family (an IPv4-only ``policy drop`` leaves IPv6 unfiltered). The model is deliberately
conservative: a rule whose conditions it does not understand is kept as a
*conditional* accept (the port counts as possibly reachable), DENY rules are not
modelled (so an explicit deny never makes a port look closed), and jumps are
followed without their conditions. It can therefore report a port as more open
than it is, never as more closed.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Net = ipaddress.IPv4Network | ipaddress.IPv6Network
PortRange = tuple[int, int]

_ANY_V4 = ipaddress.ip_network("0.0.0.0/0")
_ANY_V6 = ipaddress.ip_network("::/0")

Families = frozenset[int]
"""IP versions: ``{4}``, ``{6}`` or both."""
BOTH: Families = frozenset((4, 6))
V4: Families = frozenset((4,))
V6: Families = frozenset((6,))


class FirewallParseError(Exception):
    """Tool output was not in the expected shape."""


@dataclass(frozen=True, slots=True)
class AcceptRule:
    """An accept rule for new incoming TCP connections.

    ``ports`` is ``None`` for every port; ``sources`` is ``None`` for any source.
    ``condition`` names a condition the model does not evaluate (e.g. an input
    interface); ``text`` is the rule as the tool printed it, for evidence;
    ``families`` the IP versions it can accept (both unless the rule says).
    """

    ports: tuple[PortRange, ...] | None
    sources: tuple[Net, ...] | None
    text: str
    condition: str = ""
    families: Families = BOTH

    def matches_port(self, port: int) -> bool:
        """Whether this rule can accept a connection to ``port``."""
        return self.ports is None or any(lo <= port <= hi for lo, hi in self.ports)


class Reach(enum.StrEnum):
    """Who can open a connection to a port through the firewall."""

    CLOSED = "closed"  # default deny and no accept rule for the port
    RESTRICTED = "restricted"  # accepted only from some sources / under a condition
    OPEN = "open"  # accepted from anywhere, or no default deny at all


@dataclass(frozen=True, slots=True)
class PortAccess:
    """The answer for one port: :class:`Reach` and the rules that decided it."""

    reach: Reach
    rules: tuple[AcceptRule, ...]
    unfiltered: str = ""
    """Why the port is open with no rule: the IP family that no default deny covers."""

    def describe(self) -> str:
        """Short text for evidence, e.g. ``restricted to 192.168.1.0/24``."""
        if self.reach is Reach.CLOSED:
            return "no accept rule (default deny)"
        if self.reach is Reach.OPEN and not self.rules:
            return self.unfiltered or "not filtered (no default-deny firewall)"
        parts = []
        for rule in self.rules:
            if rule.sources is None and not rule.condition:
                parts.append(f"open to anywhere ({rule.text})")
            elif rule.condition:
                parts.append(f"accepted {rule.condition} ({rule.text})")
            else:
                parts.append("from " + ", ".join(str(net) for net in rule.sources or ()))
        return "; ".join(parts)


_REACH_ORDER = (Reach.CLOSED, Reach.RESTRICTED, Reach.OPEN)


@dataclass(frozen=True, slots=True)
class FirewallState:
    """What one backend says about INPUT filtering.

    ``deny`` holds the IP versions whose incoming traffic is dropped by default.
    """

    backend: str
    active: bool
    deny: Families
    rules: tuple[AcceptRule, ...]
    summary: str

    @property
    def default_deny(self) -> bool:
        """Whether some IP family is dropped by default (see :attr:`deny` for which)."""
        return self.active and bool(self.deny)

    def access(self, port: int, families: Families = BOTH) -> PortAccess:
        """Who can reach TCP ``port`` on this host over the IP versions ``families``.

        The answer is the most open of the families: a socket reachable over IPv4
        and IPv6 is as exposed as the less filtered one.
        """
        answers = [self._access(port, family) for family in sorted(families)]
        worst = max(answers, key=lambda a: _REACH_ORDER.index(a.reach))
        rules = tuple(
            dict.fromkeys(rule for a in answers if a.reach is worst.reach for rule in a.rules)
        )
        return PortAccess(worst.reach, rules, worst.unfiltered)

    def _access(self, port: int, family: int) -> PortAccess:
        if not (self.active and family in self.deny):
            other = "IPv4" if family == 6 else "IPv6"
            note = f"IPv{family} not filtered (default deny covers {other} only)"
            return PortAccess(Reach.OPEN, (), note if self.default_deny else "")
        matching = tuple(
            rule for rule in self.rules if family in rule.families and rule.matches_port(port)
        )
        if not matching:
            return PortAccess(Reach.CLOSED, ())
        if any(rule.sources is None and not rule.condition for rule in matching):
            return PortAccess(Reach.OPEN, matching)
        return PortAccess(Reach.RESTRICTED, matching)


def merge_families(v4: FirewallState, v6: FirewallState) -> FirewallState:
    """One state from an IPv4-only reading (``iptables -S``) and an IPv6-only one."""
    return FirewallState(
        v4.backend,
        v4.active or v6.active,
        (v4.deny & V4) | (v6.deny & V6),
        v4.rules + v6.rules,
        f"{v4.summary}; {v6.summary}",
    )


def _net(text: str) -> Net:
    return ipaddress.ip_network(text, strict=False)


def _sources(nets: Iterable[Net]) -> tuple[Net, ...] | None:
    """``None`` (anywhere) when the list holds a whole-family network."""
    out = tuple(nets)
    if any(net in (_ANY_V4, _ANY_V6) for net in out):
        return None
    return out


# --------------------------------------------------------------------------- ufw

_UFW_APPS: Mapping[str, tuple[PortRange, ...]] = {
    "openssh": ((22, 22),),
    "nginx full": ((80, 80), (443, 443)),
    "nginx http": ((80, 80),),
    "nginx https": ((443, 443),),
    "apache": ((80, 80),),
    "apache full": ((80, 80), (443, 443)),
    "apache secure": ((443, 443),),
    "www": ((80, 80),),
    "www full": ((80, 80), (443, 443)),
    "www secure": ((443, 443),),
}
_UFW_PORTS = re.compile(r"^(?P<ports>\d+(?:[:,]\d+)*)(?:/(?P<proto>tcp|udp))?$")


def _port_list(text: str) -> tuple[PortRange, ...]:
    out: list[PortRange] = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        out.append((int(lo), int(hi or lo)))
    return tuple(out)


def ufw_ipv6_enabled(defaults_text: str | None) -> bool:
    """Whether ufw filters IPv6: ``IPV6=`` of ``/etc/default/ufw`` (``None``: file absent;
    ufw's default is yes)."""
    for line in (defaults_text or "").splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and name.strip() == "IPV6":
            return value.strip().strip("\"'").lower() != "no"
    return True


def parse_ufw_status(text: str, *, ipv6: bool = True) -> FirewallState:
    """Parse ``ufw status verbose``; ``ipv6=False`` when ufw leaves IPv6 alone (``IPV6=no``).

    Raises :class:`FirewallParseError` when there is no ``Status:`` line.
    """
    lines = text.splitlines()
    status = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("Status:")), None)
    if status is None:
        raise FirewallParseError("no 'Status:' line in ufw output")
    if status != "active":
        return FirewallState("ufw", False, frozenset(), (), f"ufw: Status: {status}")
    default = next((ln for ln in lines if ln.startswith("Default:")), "")
    incoming = re.search(r"(\w+) \(incoming\)", default)
    default_deny = incoming is not None and incoming.group(1) in ("deny", "reject")
    rules: list[AcceptRule] = []
    in_table = False
    for line in lines:
        if re.match(r"^--\s+-+\s+--", line.strip()):
            in_table = True
            continue
        if not in_table or not line.strip():
            continue
        rule = _ufw_rule(line)
        if rule is not None:
            rules.append(rule)
    summary = f"ufw active, {default.strip() or 'no Default line'}"
    if not ipv6:
        summary += " (IPV6=no in /etc/default/ufw: IPv6 not filtered)"
    deny = (BOTH if ipv6 else V4) if default_deny else frozenset()
    return FirewallState("ufw", True, deny, tuple(rules), summary)


def _ufw_rule(line: str) -> AcceptRule | None:
    columns = re.split(r"\s{2,}", line.strip())
    if len(columns) < 3:
        return None
    to, action, source = columns[0], columns[1], columns[2]
    if not (action.startswith(("ALLOW", "LIMIT")) and "OUT" not in action and "FWD" not in action):
        return None
    families = V6 if "(v6)" in to or "(v6)" in source else BOTH
    to = to.replace("(v6)", "").strip()
    condition = ""
    if " on " in to:
        to, _, iface = to.partition(" on ")
        condition = f"only on interface {iface.strip()}"
    ports: tuple[PortRange, ...] | None
    last = to.split()[-1] if to.split() else ""
    match = _UFW_PORTS.match(last)
    if match:
        if match.group("proto") == "udp":
            return None
        ports = _port_list(match.group("ports"))
    elif to in ("Anywhere", ""):
        ports = None
    elif to.lower() in _UFW_APPS:
        ports = _UFW_APPS[to.lower()]
    else:
        try:
            _net(to)
            ports = None  # "to <address>": every port on that address
        except ValueError:
            ports = None
            condition = condition or f"by application profile {to!r} (ports not known)"
    src = source.replace("(v6)", "").split()[0] if source.strip() else "Anywhere"
    sources = None if src == "Anywhere" else _sources([_net(src)])
    if sources:
        families = frozenset(net.version for net in sources)
    return AcceptRule(ports, sources, line.strip(), condition, families)


# --------------------------------------------------------------------------- nftables


def parse_nft_json(text: str) -> FirewallState:
    """Parse ``nft -j list ruleset``: the input base chains, their policy and accept rules.

    Raises :class:`FirewallParseError` on output that is not nft's JSON.
    """
    try:
        data = json.loads(text)
        objects = data["nftables"]
    except (ValueError, KeyError, TypeError) as exc:
        raise FirewallParseError(f"not nft JSON output: {exc}") from None
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules: dict[tuple[str, str, str], list[list[dict[str, Any]]]] = {}
    sets: dict[tuple[str, str, str], list[Any]] = {}
    for obj in objects:
        if "chain" in obj:
            c = obj["chain"]
            chains[(c["family"], c["table"], c["name"])] = c
        elif "rule" in obj:
            r = obj["rule"]
            rules.setdefault((r["family"], r["table"], r["chain"]), []).append(r.get("expr", []))
        elif "set" in obj:
            s = obj["set"]
            sets[(s["family"], s["table"], s["name"])] = list(s.get("elem", []))
    inputs = [
        key
        for key, chain in chains.items()
        if chain.get("hook") == "input" and key[0] in ("ip", "ip6", "inet")
    ]
    if not inputs:
        return FirewallState("nftables", False, frozenset(), (), "nftables: no input chain")
    deny_chains = []
    for key in inputs:
        policy = chains[key].get("policy", "accept")
        tail_drop = any(_is_bare_drop(expr) for expr in rules.get(key, []))
        if policy == "drop" or tail_drop:
            deny_chains.append(key)
    described = ", ".join(
        f"{fam} {table} {name} policy {chains[(fam, table, name)].get('policy', 'accept')}"
        for fam, table, name in inputs
    )
    if not deny_chains:
        return FirewallState(
            "nftables", True, frozenset(), (), f"nftables input chains: {described}"
        )
    deny = frozenset().union(*(_NFT_FAMILIES[key[0]] for key in deny_chains))
    accept: list[AcceptRule] = []
    for key in deny_chains:
        for expr in _walk_chain(key, rules, set()):
            rule = _nft_rule(expr, key, sets)
            if rule is not None:
                accept.append(rule)
    return FirewallState(
        "nftables", True, deny, tuple(accept), f"nftables input chains: {described}"
    )


_NFT_FAMILIES: Mapping[str, Families] = {"ip": V4, "ip6": V6, "inet": BOTH}


def _is_bare_drop(expr: Sequence[dict[str, Any]]) -> bool:
    meaningful = [e for e in expr if not ({"counter", "log", "comment"} & e.keys())]
    return len(meaningful) == 1 and bool({"drop", "reject"} & meaningful[0].keys())


def _walk_chain(
    key: tuple[str, str, str],
    rules: Mapping[tuple[str, str, str], list[list[dict[str, Any]]]],
    seen: set[tuple[str, str, str]],
) -> Iterable[list[dict[str, Any]]]:
    """Rules of a chain and, in place of each jump/goto, the rules of its target."""
    if key in seen:
        return
    seen.add(key)
    for expr in rules.get(key, []):
        target = next(
            (e[verb]["target"] for e in expr for verb in ("jump", "goto") if verb in e), None
        )
        if target is not None:
            yield from _walk_chain((key[0], key[1], target), rules, seen)
        else:
            yield expr


def _nft_values(
    right: Any, sets: Mapping[tuple[str, str, str], list[Any]], key: tuple[str, str, str]
) -> list[Any]:
    if isinstance(right, str) and right.startswith("@"):
        return sets.get((key[0], key[1], right[1:]), [])
    if isinstance(right, dict) and "set" in right:
        return list(right["set"])
    if isinstance(right, list):
        return right
    return [right]


def _nft_ports(values: Iterable[Any]) -> tuple[PortRange, ...]:
    out: list[PortRange] = []
    for value in values:
        if isinstance(value, int):
            out.append((value, value))
        elif isinstance(value, dict) and "range" in value:
            lo, hi = value["range"]
            out.append((int(lo), int(hi)))
        elif isinstance(value, str) and value.isdigit():
            out.append((int(value), int(value)))
        else:
            raise ValueError(f"port value {value!r}")
    return tuple(out)


def _nft_nets(values: Iterable[Any]) -> list[Net]:
    out: list[Net] = []
    for value in values:
        if isinstance(value, str):
            out.append(_net(value))
        elif isinstance(value, dict) and "prefix" in value:
            out.append(_net(f"{value['prefix']['addr']}/{value['prefix']['len']}"))
        elif isinstance(value, dict) and "range" in value:
            lo, hi = (ipaddress.ip_address(v) for v in value["range"])
            out.extend(ipaddress.summarize_address_range(lo, hi))
        else:
            raise ValueError(f"address value {value!r}")
    return out


def _nft_rule(
    expr: Sequence[dict[str, Any]],
    key: tuple[str, str, str],
    sets: Mapping[tuple[str, str, str], list[Any]],
) -> AcceptRule | None:
    """An accept rule for new TCP connections, or ``None`` if the rule is not one."""
    if not any("accept" in e for e in expr):
        return None
    ports: tuple[PortRange, ...] | None = None
    sources: list[Net] | None = None
    conditions: list[str] = []
    families = _NFT_FAMILIES[key[0]]
    text = json.dumps(expr, separators=(",", ":"))[:200]
    for element in expr:
        match = element.get("match")
        if match is None:
            continue
        left, right, op = match.get("left"), match.get("right"), match.get("op", "==")
        values = _nft_values(right, sets, key)
        if isinstance(left, dict) and "ct" in left and left["ct"].get("key") == "state":
            states = {str(v) for v in values}
            if op in ("==", "in") and "new" not in states:
                return None  # established/related/invalid: no new connection gets in
            continue
        if isinstance(left, dict) and "meta" in left:
            meta_key = left["meta"].get("key")
            if meta_key in ("iif", "iifname") and op == "==" and values == ["lo"]:
                return None  # loopback only
            if meta_key in ("l4proto", "protocol", "nfproto") and op == "==":
                if meta_key == "l4proto" and values not in (["tcp"], [6]):
                    return None
                if meta_key == "nfproto" and values in (["ipv4"], ["ipv6"]):
                    families &= V4 if values == ["ipv4"] else V6
                continue
        payload = left.get("payload") if isinstance(left, dict) else None
        if payload and op in ("==", "in"):
            proto, fld = payload.get("protocol"), payload.get("field")
            try:
                if fld == "dport":
                    if proto not in {"tcp", "th"}:
                        return None
                    ports = _nft_ports(values)
                    continue
                if fld == "saddr" and proto in ("ip", "ip6"):
                    families &= V4 if proto == "ip" else V6
                    sources = (sources or []) + _nft_nets(values)
                    continue
            except ValueError:
                pass
        conditions.append(f"under a condition ({json.dumps(match, separators=(',', ':'))[:80]})")
    source_nets = None if sources is None else _sources(sources)
    rule_text = f"nft {key[0]} {key[1]} {key[2]}: {text}"
    return AcceptRule(ports, source_nets, rule_text, "; ".join(conditions), families)


# --------------------------------------------------------------------------- iptables


def parse_iptables_save(text: str, *, family: int = 4) -> FirewallState:
    """Parse ``iptables -S`` (or ``ip6tables -S`` with ``family=6``): the INPUT policy and
    accept rules of INPUT and its jump targets, all for that one IP family."""
    tool = "iptables" if family == 4 else "ip6tables"
    families = V4 if family == 4 else V6
    policy = "ACCEPT"
    chain_rules: dict[str, list[list[str]]] = {}
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and words[0] == "-P" and words[1] == "INPUT":
            policy = words[2]
        elif len(words) >= 2 and words[0] == "-A":
            chain_rules.setdefault(words[1], []).append(words[2:])
    tail_drop = any(
        words in (["-j", "DROP"], ["-j", "REJECT"]) for words in chain_rules.get("INPUT", [])
    )
    default_deny = policy == "DROP" or tail_drop
    summary = f"{tool} INPUT policy {policy}" + (" with a final DROP rule" if tail_drop else "")
    if not default_deny:
        return FirewallState("iptables", True, frozenset(), (), summary)
    accept: list[AcceptRule] = []
    seen: set[str] = set()

    def walk(chain: str) -> None:
        if chain in seen:
            return
        seen.add(chain)
        for words in chain_rules.get(chain, []):
            target = _opt(words, "-j")
            if target == "ACCEPT":
                rule = _iptables_rule(words, chain, tool, families)
                if rule is not None:
                    accept.append(rule)
            elif target and target in chain_rules:
                walk(target)

    walk("INPUT")
    return FirewallState("iptables", True, families, tuple(accept), summary)


def _opt(words: Sequence[str], name: str) -> str | None:
    for i, word in enumerate(words[:-1]):
        if word == name:
            return words[i + 1]
    return None


def _iptables_rule(
    words: list[str], chain: str, tool: str, families: Families
) -> AcceptRule | None:
    text = f"{tool} -A {chain} " + " ".join(words)
    proto = _opt(words, "-p")
    if proto not in (None, "tcp", "6", "all"):
        return None
    iface = _opt(words, "-i")
    if iface == "lo":
        return None
    state = _opt(words, "--ctstate") or _opt(words, "--state")
    if state is not None and "NEW" not in state.split(","):
        return None
    conditions = []
    if iface is not None:
        conditions.append(f"only on interface {iface}")
    widened = ("--dport", "--dports", "--destination-port", "-s", "--source")
    negations = [i for i, word in enumerate(words) if word == "!"]
    if any(i + 1 >= len(words) or words[i + 1] not in widened for i in negations):
        conditions.append("with a negated match")
    ports: tuple[PortRange, ...] | None = None
    dport = _opt(words, "--dport") or _opt(words, "--dports") or _opt(words, "--destination-port")
    src = _opt(words, "-s") or _opt(words, "--source")
    # `! --dport 22` accepts every port but 22, `! -s NET` every source outside NET:
    # a negated match is read as no restriction at all (more open, never more closed).
    if _negated(words, *widened[:3]):
        dport = None
    if _negated(words, *widened[3:]):
        src = None
    try:
        if dport is not None:
            ports = _port_list(dport)
        sources = None if src is None else _sources(_net(s) for s in src.split(","))
    except ValueError:
        return AcceptRule(None, None, text, "under a condition the audit could not read", families)
    return AcceptRule(ports, sources, text, "; ".join(conditions), families)


def _negated(words: Sequence[str], *names: str) -> bool:
    """Whether ``!`` precedes one of the options ``names`` (``! --dport 22``)."""
    return any(word in names and i > 0 and words[i - 1] == "!" for i, word in enumerate(words))
