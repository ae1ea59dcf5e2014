"""The brakes that keep the admin in: live SSH sessions, runtime allow entries, the storm brake.

- :func:`read_ssh_clients`: the client addresses of established TCP connections to
  the sshd ports, from the kernel's socket table (``/proc/net/tcp`` and ``tcp6``),
  without running anything. :class:`SshSessions` caches it for a second, so a burst
  of findings reads the table once.
- :class:`RuntimeAllowlist`: networks an operator allowed at run time
  (``aisentinel allow CIDR --ttl ...``), each with an expiry.
- :class:`StormBrake`: more than ``limit`` new bans within a minute trips it; then
  every further ban is an alert until an operator resets it or the rate of would-be
  bans stays below ``limit / 2`` for ``cooldown`` seconds. The engine keeps its
  :meth:`~StormBrake.state` in the ledger and gives it back with
  :meth:`~StormBrake.restore` at start, so a restart does not release it.

None of them is thread-safe on its own: the decision engine serialises its callers.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from aisentinel.events import IPAddress, IPNetwork, canonical_address

log = structlog.get_logger(__name__)

TCP_ESTABLISHED = "01"
SSH_CACHE_SECONDS = 1.0
"""How long one reading of the socket table is used (a burst of findings reads it once)."""
WINDOW_SECONDS = 60.0
"""The storm brake counts bans in this window."""


def _hex_v4(text: str) -> IPAddress:
    return ipaddress.IPv4Address(bytes.fromhex(text)[::-1])


def _hex_v6(text: str) -> IPAddress:
    raw = bytes.fromhex(text)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return canonical_address(str(ipaddress.IPv6Address(words)))


def read_ssh_clients(proc: Path, ports: Collection[int]) -> set[IPAddress]:
    """Remote addresses of ESTABLISHED TCP connections whose local port is in ``ports``.

    Reads ``proc/net/tcp`` and ``proc/net/tcp6`` (the socket table of the daemon's
    network namespace). IPv4-mapped IPv6 peers become IPv4. A file that cannot be
    read is skipped (logged at debug: IPv6 may be off); a malformed row is skipped.
    """
    found: set[IPAddress] = set()
    for name, decode in (("tcp", _hex_v4), ("tcp6", _hex_v6)):
        path = proc / "net" / name
        try:
            with path.open(encoding="ascii", errors="replace") as fh:
                next(fh, None)  # the header
                for line in fh:
                    fields = line.split(None, 4)
                    if len(fields) < 4 or fields[3] != TCP_ESTABLISHED:
                        continue
                    local_port = fields[1].rpartition(":")[2]
                    try:
                        if int(local_port, 16) not in ports:
                            continue
                        found.add(decode(fields[2].rpartition(":")[0]))
                    except ValueError:
                        continue
        except OSError as exc:
            log.debug("socket table unreadable", path=str(path), error=str(exc))
    return found


class SshSessions:
    """The current SSH clients, read at most once per :data:`SSH_CACHE_SECONDS`."""

    def __init__(
        self, source: Callable[[], Iterable[IPAddress]], monotonic: Callable[[], float]
    ) -> None:
        self._source = source
        self._monotonic = monotonic
        self._read_at: float | None = None
        self.clients: frozenset[IPAddress] = frozenset()

    def current(self) -> frozenset[IPAddress]:
        """The clients now (re-read when the cached reading is older than a second)."""
        mono = self._monotonic()
        if self._read_at is None or mono - self._read_at >= SSH_CACHE_SECONDS:
            self._read_at = mono
            try:
                self.clients = frozenset(self._source())
            except Exception as exc:  # noqa: BLE001 - a failing probe keeps the last known set
                log.warning("cannot read SSH sessions; keeping the last known", error=str(exc))
        return self.clients

    def holding(self, network: IPNetwork) -> IPAddress | None:
        """A current SSH client inside ``network``, or ``None``."""
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

    def entries(self) -> list[AllowEntry]:
        """Entries in force, soonest expiry first."""
        return sorted(self._entries.values(), key=lambda e: (e.expires_at, str(e.network)))

    def networks(self) -> tuple[IPNetwork, ...]:
        """The allowed networks."""
        return tuple(self._entries)


class StormBrake:
    """Alert-only after a ban storm, until reset or calm (see the module docstring).

    ``attempt(now)`` is asked before each new ban: it counts the ban and says whether
    it may go ahead. ``poll(now)`` (from the engine's periodic expiry) lets the brake
    release when no bans are attempted at all.
    """

    def __init__(self, limit: int, cooldown: float) -> None:
        self.limit = limit
        self.cooldown = cooldown
        self.tripped_since: float | None = None
        self.releases = 0
        """How many times it was released (a reset or calm): whoever holds findings back
        because of it (the pipeline, a minute per key) lets them through when it moves."""
        self._recent: deque[float] = deque(maxlen=limit + 1)
        self._calm_since: float | None = None

    def restore(self, tripped_since: float | None, recent: Iterable[float]) -> None:
        """Take back a persisted ``tripped_since`` and the times of the would-be bans of
        the last minute (at start: a restart neither releases the brake nor empties its
        window); the calm starts afresh."""
        self.tripped_since = tripped_since
        self._calm_since = None
        self._recent = deque(sorted(recent)[-(self.limit + 1) :], maxlen=self.limit + 1)

    def configure(self, limit: int, cooldown: float) -> None:
        """A reloaded ``max_bans_per_minute`` / ``brake_cooldown`` (the state is kept)."""
        self.limit, self.cooldown = limit, cooldown
        self._recent = deque(self._recent, maxlen=limit + 1)

    @property
    def tripped(self) -> bool:
        """Whether new bans are alerts now."""
        return self.tripped_since is not None

    def _trim(self, now: float) -> None:
        horizon = now - WINDOW_SECONDS
        recent = self._recent
        while recent and recent[0] <= horizon:
            recent.popleft()

    def attempt(self, now: float) -> bool:
        """Count a would-be ban at ``now``; ``True`` when it may go ahead."""
        self._trim(now)
        if self.tripped_since is not None:
            self._check_calm(now)  # on the rate before this ban
        if self.tripped_since is None:
            if len(self._recent) < self.limit:
                self._recent.append(now)
                return True
            self.tripped_since = now
            self._calm_since = None
            log.warning(
                "ban storm brake tripped: new bans become alerts until `aisentinel brake "
                "reset`, or until the rate stays below half the limit for the cool-down",
                max_bans_per_minute=self.limit,
                cooldown_seconds=self.cooldown,
            )
        self._recent.append(now)
        return False

    def poll(self, now: float) -> None:
        """Release the brake when the rate stayed low for the cool-down (no bans needed)."""
        if self.tripped_since is None:
            return
        self._trim(now)
        self._check_calm(now)

    def _check_calm(self, now: float) -> None:
        if len(self._recent) * 2 >= self.limit:
            self._calm_since = None
            return
        if self._calm_since is None:
            self._calm_since = now
        if now - self._calm_since >= self.cooldown:
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
