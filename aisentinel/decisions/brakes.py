"""The brakes that keep the admin in: logged-in SSH sessions, runtime allow entries, the
storm brake.

- :func:`read_ssh_connections`: the established TCP connections to the sshd ports,
  from the kernel's socket table (``/proc/net/tcp`` and ``tcp6``), without running
  anything. :class:`SshSessions` keeps the clients of those that are logged-in
  sessions (sshd logged the login, or the connection outlived ``LoginGraceTime``: a
  connection alone is no session, a brute-forcer's is established from the TCP
  handshake on) and reads the table at most once a second, so a burst of findings
  reads it once.
- :class:`RuntimeAllowlist`: networks an operator allowed at run time
  (``aisentinel allow CIDR --ttl ...``), each with an expiry.
- :class:`StormBrake`: new bans of more than ``limit`` parties (an IPv6 /48, else an
  address or workload) within a minute trip it; then
  every further ban is an alert until an operator resets it or the rate of would-be
  bans stays below ``limit / 2`` for ``cooldown`` seconds. The engine keeps its
  :meth:`~StormBrake.state` in the ledger and gives it back with
  :meth:`~StormBrake.restore` at start, so a restart does not release it. Its
  one-minute window and its calm are measured on the monotonic clock: a step of the
  wall clock (NTP correcting a fast clock by an hour) neither keeps it tripped nor
  holds old bans in its window; ``tripped_since`` is wall time, for people.

None of them is thread-safe on its own: the decision engine serialises its callers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import structlog

from aisentinel.events import (
    AddressTarget,
    IPAddress,
    IPNetwork,
    Target,
    canonical_address,
    is_nat64,
)

log = structlog.get_logger(__name__)

TCP_ESTABLISHED = "01"
SSH_CACHE_SECONDS = 1.0
"""How long one reading of the socket table is used (a burst of findings reads it once)."""

LOGIN_REREAD_SECONDS = 0.1
"""At most one extra reading of the socket table per this long for sshd's login lines
that name a connection the last reading did not hold: a reading this recent was taken
after the connection opened (key exchange and authentication take longer), and a flood
of forged ``Accepted`` lines (``logger`` into auth.log) costs at most ten readings a
second."""
GRACE_SLACK_SECONDS = 5.0
"""Added to ``LoginGraceTime`` before an unannounced connection counts as logged in: sshd
needs a moment to close the one it drops at the deadline."""
WINDOW_SECONDS = 60.0
"""The storm brake counts bans in this window."""
STORM_PREFIX6 = 48
"""The storm brake counts an IPv6 ban target as its /48 (one site's allocation)."""


def _hex_v4(text: str) -> IPAddress:
    return ipaddress.IPv4Address(bytes.fromhex(text)[::-1])


def _hex_v6(text: str) -> IPAddress:
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return canonical_address(str(ipaddress.IPv6Address(words)))


class SshConnection(NamedTuple):
    """One ESTABLISHED TCP connection to an sshd port, as the socket table shows it."""

    client: IPAddress
    """The remote address (IPv4-mapped IPv6 folded to IPv4)."""
    port: int
    """The remote (client's) port: what sshd logs as ``from ADDR port N``."""
    key: str
    """The local and remote address:port as the kernel writes them, and the socket's
    inode: one socket, never a later connection that reuses the same 4-tuple."""


def read_ssh_connections(proc: Path, ports: Collection[int]) -> list[SshConnection]:
    """ESTABLISHED TCP connections whose local port is in ``ports``.

    Reads ``proc/net/tcp`` and ``proc/net/tcp6`` (the socket table of the daemon's
    network namespace). A file that cannot be read is skipped (logged at debug: IPv6
    may be off); a malformed row is skipped.
    """
    found: list[SshConnection] = []
    for name, decode in (("tcp", _hex_v4), ("tcp6", _hex_v6)):
        path = proc / "net" / name
        try:
            with path.open(encoding="ascii", errors="replace") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split(None, 10)
                    if len(fields) < 4 or fields[3] != TCP_ESTABLISHED:
                        continue
                    local_port = fields[1].rpartition(":")[2]
                    remote, _sep, remote_port = fields[2].rpartition(":")
                    try:
                        if int(local_port, 16) not in ports:
                            continue
                        client = decode(remote)
                        port = int(remote_port, 16)
                    except ValueError:
                        continue
                    inode = fields[9] if len(fields) > 9 else "?"
                    found.append(SshConnection(client, port, f"{fields[1]} {fields[2]} {inode}"))
        except OSError as exc:
            log.debug("socket table unreadable", path=str(path), error=str(exc))
    return found


class SshSessions:
    """The clients of logged-in SSH sessions, from the socket table read at most once
    per :data:`SSH_CACHE_SECONDS`.

    An ESTABLISHED connection to sshd is not a session: a brute-forcer's connection is
    established from the TCP handshake on, and sshd takes several passwords on it. A
    connection counts as logged in when sshd logged ``Accepted ... from ADDR port N``
    for it (:meth:`login`, bound to that very socket), or when it has been open for
    longer than sshd's ``LoginGraceTime`` (``grace``; sshd drops a connection that has
    not authenticated by then; 0 means sshd has no limit, and then only a login
    counts). The age is counted from when this reading first saw the socket, which
    is never before sshd accepted it.
    """

    def __init__(
        self,
        source: Callable[[], Iterable[SshConnection]],
        monotonic: Callable[[], float],
        grace: float,
    ) -> None:
        self._source = source
        self._monotonic = monotonic
        self.grace = grace
        """sshd's ``LoginGraceTime`` in seconds (0: no limit, only logins count)."""
        self._read_at: float | None = None
        self._open: tuple[SshConnection, ...] = ()
        self._first_seen: dict[str, float] = {}
        """Socket key -> monotonic time of the first reading that held it."""
        self._logins: dict[str, float] = {}
        """Socket key -> when sshd logged its login (epoch seconds): kept while it is open."""
        self._closed: list[str] = []
        self.clients: frozenset[IPAddress] = frozenset()
        """The clients of logged-in sessions, as of the last reading."""

    def current(self) -> frozenset[IPAddress]:
        """The clients of logged-in sessions now (the socket table is read again when
        the last reading is a second old)."""
        mono = self._monotonic()
        if self._read_at is None or mono - self._read_at >= SSH_CACHE_SECONDS:
            self._read(mono)
        return self.clients

    def _read(self, mono: float) -> None:
        self._read_at = mono
        try:
            connections = tuple(self._source())
        except Exception as exc:  # noqa: BLE001 - a failing probe keeps the last known set
            log.warning("cannot read SSH sessions; keeping the last known", error=str(exc))
            return
        seen = self._first_seen
        self._open = connections
        self._first_seen = {c.key: seen.get(c.key, mono) for c in connections}
        gone = [key for key in self._logins if key not in self._first_seen]
        for key in gone:
            del self._logins[key]
        self._closed.extend(gone)
        self._judge(mono)

    def _judge(self, mono: float) -> None:
        grace = self.grace
        old = mono - grace - GRACE_SLACK_SECONDS
        first_seen, logins = self._first_seen, self._logins
        self.clients = frozenset(
            c.client
            for c in self._open
            if c.key in logins or (grace > 0 and first_seen[c.key] < old)
        )

    def login(self, client: IPAddress, port: int | None, at: float) -> list[str]:
        """sshd logged a login of ``client`` from ``port`` (``None``: not logged) at
        ``at``: its open connection is a session from now on. Returns the keys of the
        sockets it was bound to (none when no such connection is open any more)."""
        bound = self._matching(client, port)
        mono = self._monotonic()
        stale = self._read_at is None or mono - self._read_at >= LOGIN_REREAD_SECONDS
        if not bound and stale:  # a connection newer than the last reading
            self._read(mono)
            bound = self._matching(client, port)
        for key in bound:
            self._logins[key] = at
        if bound:
            self._judge(self._monotonic())
        return bound

    def _matching(self, client: IPAddress, port: int | None) -> list[str]:
        return [
            c.key for c in self._open if c.client == client and (port is None or c.port == port)
        ]

    def restore(self, logins: Iterable[tuple[str, float]]) -> None:
        """Take back the logins kept in the ledger (at start): a restart must not stop
        protecting a logged-in admin. Those whose socket is closed are dropped at the
        next reading."""
        self._logins.update(logins)
        self._read_at = None

    def closed(self) -> list[str]:
        """The keys of logged-in sockets found closed since the last call (their
        logins are forgotten; the engine drops them from the ledger)."""
        gone, self._closed = self._closed, []
        return gone

    def holding(self, network: IPNetwork) -> IPAddress | None:
        """A client of a logged-in session inside ``network``, or ``None``."""
        for addr in self.current():
            if addr.version == network.version and addr in network:
                return addr
        return None


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """A network allowed at run time by ``who`` until ``expires_at`` (epoch seconds)."""

    network: IPNetwork
    expires_at: float
    who: str
    reason: str = ""


class RuntimeAllowlist:
    """Allow entries added through the control socket; each ends at its expiry."""

    def __init__(self) -> None:
        self._entries: dict[IPNetwork, AllowEntry] = {}

    def add(self, entry: AllowEntry) -> None:
        """Add ``entry`` (a later one for the same network replaces it)."""
        self._entries[entry.network] = entry

    def prune(self, now: float) -> list[AllowEntry]:
        """Drop and return the entries that ended at or before ``now``."""
        gone = [e for e in self._entries.values() if e.expires_at <= now]
        for entry in gone:
            del self._entries[entry.network]
        return gone

    def shift(self, seconds: float) -> int:
        """Move every entry's expiry by ``seconds`` (the wall clock stepped: an entry
        keeps the time it had left); returns how many moved."""
        for network, entry in list(self._entries.items()):
            self._entries[network] = AllowEntry(
                entry.network, entry.expires_at + seconds, entry.who, entry.reason
            )
        return len(self._entries)

    def entries(self) -> list[AllowEntry]:
        """Entries in force, soonest expiry first."""
        return sorted(self._entries.values(), key=lambda e: (e.expires_at, str(e.network)))

    def networks(self) -> tuple[IPNetwork, ...]:
        """The allowed networks."""
        return tuple(self._entries)


def storm_party(target: Target) -> Hashable:
    """Whom the storm brake counts a ban of ``target`` as: an IPv6 network narrower than
    /48 as its /48 (one site's allocation), a NAT64 address as itself (one IPv4 client
    behind a gateway), anything else as its text."""
    if isinstance(target, AddressTarget):
        # From the target's fields: no network object (30 us a ban).
        address = target.address
        if address.version == 6 and target.prefixlen > STORM_PREFIX6 and not is_nat64(address):
            return int(address) >> (128 - STORM_PREFIX6)
    return target.text


class StormBrake:
    """Alert-only after a ban storm, until reset or calm (see the module docstring).

    ``attempt(now, party)`` is asked before each new ban: it counts the ban and says
    whether it may go ahead. ``poll()`` (from the engine's periodic expiry) lets the
    brake release when no bans are attempted at all. ``now`` is wall time (what
    ``tripped_since`` says); the window and the calm read ``monotonic``, so a step of
    the wall clock neither keeps old bans in the window nor the brake tripped.

    The brake counts *parties*, not bans: what it guards against is a bug or a forged
    flood banning many different holders of addresses at once, and one holder of many
    addresses is one party. The engine names an IPv6 target by its /48
    (:data:`STORM_PREFIX6`, one site's allocation: a single attacker holds 65,536 /64s
    and could otherwise trip the brake alone, and keep it tripped, so that none of its
    bans, nor anyone else's, were ever enforced), and anything else by its text.
    Until the brake trips, further bans of a party already counted in the window go
    ahead: they do not add to a storm. Once tripped, every new ban is an alert.
    """

    def __init__(self, limit: int, cooldown: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self.limit = limit
        self.cooldown = cooldown
        self.tripped_since: float | None = None
        self.releases = 0
        """How many times it was released (a reset or calm): whoever holds findings back
        because of it (the pipeline, a minute per key) lets them through when it moves."""
        self._recent: dict[Hashable, float] = {}
        """Party -> its latest would-be ban in the window, oldest first; at most
        ``limit + 1`` of them (more never changes an answer)."""
        self._calm_since: float | None = None

    def restore(
        self, tripped_since: float | None, recent: Iterable[tuple[float, Hashable]], now: float
    ) -> None:
        """Take back a persisted ``tripped_since`` and the would-be bans of the last
        minute, (wall time, party), placed on the monotonic clock by their age at ``now``
        (at start: a restart neither releases the brake nor empties its window); the calm
        starts afresh."""
        self.tripped_since = tripped_since
        self._calm_since = None
        self._recent = {}
        mono = self._monotonic()
        for at, party in sorted(recent, key=lambda r: r[0]):
            self._note(party, mono - max(0.0, now - at))

    def configure(self, limit: int, cooldown: float) -> None:
        """A reloaded ``max_bans_per_minute`` / ``brake_cooldown`` (the state is kept)."""
        self.limit, self.cooldown = limit, cooldown
        while len(self._recent) > limit + 1:
            del self._recent[next(iter(self._recent))]

    @property
    def tripped(self) -> bool:
        """Whether new bans are alerts now."""
        return self.tripped_since is not None

    def _trim(self, mono: float) -> None:
        horizon = mono - WINDOW_SECONDS
        recent = self._recent
        while recent:
            party, at = next(iter(recent.items()))
            if at > horizon:
                break
            del recent[party]

    def _note(self, party: Hashable, mono: float) -> None:
        recent = self._recent
        recent.pop(party, None)
        recent[party] = mono
        if len(recent) > self.limit + 1:
            del recent[next(iter(recent))]

    def attempt(self, now: float, party: Hashable) -> bool:
        """Count a would-be ban of ``party`` at ``now``; ``True`` when it may go ahead."""
        mono = self._monotonic()
        self._trim(mono)
        if self.tripped_since is not None:
            self._check_calm(mono)  # on the rate before this ban
        if self.tripped_since is None:
            if party in self._recent or len(self._recent) < self.limit:
                self._note(party, mono)
                return True
            self.tripped_since = now
            self._calm_since = None
            log.warning(
                "ban storm brake tripped: new bans become alerts until `aisentinel brake "
                "reset`, or until the rate stays below half the limit for the cool-down",
                max_bans_per_minute=self.limit,
                cooldown_seconds=self.cooldown,
            )
        self._note(party, mono)
        return False

    def poll(self) -> None:
        """Release the brake when the rate stayed low for the cool-down (no bans needed)."""
        if self.tripped_since is None:
            return
        mono = self._monotonic()
        self._trim(mono)
        self._check_calm(mono)

    def _check_calm(self, mono: float) -> None:
        if len(self._recent) * 2 >= self.limit:
            self._calm_since = None
            return
        if self._calm_since is None:
            self._calm_since = mono
        if mono - self._calm_since >= self.cooldown:
            self.release("the ban rate fell below half the limit for the cool-down")

    def release(self, why: str) -> bool:
        """Release the brake (an operator's reset or calm); ``False`` when it was not on."""
        if self.tripped_since is None:
            return False
        self.tripped_since = None
        self._calm_since = None
        self._recent.clear()
        self.releases += 1
        log.info("ban storm brake released", why=why)
        return True
