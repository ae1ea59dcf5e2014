"""Typed, immutable values passed between the stages.

sources -> :class:`LineBatch` -> parsers -> ``Event`` -> detectors -> :class:`Finding`
-> decisions -> :class:`Decision` -> responders; a source of structured records (the
journal) hands on an :class:`EventBatch` of typed events instead, which skips the parsers.

Parsed events are ``NamedTuple`` rather than frozen dataclasses on purpose: they are
made once per log line on the hot path, and a ``NamedTuple`` is built about 1.6x
faster than a ``@dataclass(frozen=True, slots=True)`` with the same fields (measured:
693k vs 441k parsed nginx lines/s, see ARCHITECTURE.md). They are just as typed and
just as immutable. Findings and decisions are rare and are frozen slotted dataclasses.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

from aisentinel.textsafe import escape

# --------------------------------------------------------------------------- sources


class CutLine(str):
    """A line that its source cut at its line length cap (``max_line_bytes``): the text
    before the cut, the rest of the line discarded.

    It is a ``str`` and reads as one; only its type says it was cut, so a parser that
    cannot read it whole may recover the fields written before the cut
    (``type(line) is CutLine``, tested only once the line failed to parse), while a
    malformed line that was not cut stays unparsed. ``sources/file.py`` and
    ``replay.read_lines`` make them, and count them (``lines_truncated``).
    """

    __slots__ = ()


class LineBatch(NamedTuple):
    """Complete lines read from one source in one go.

    ``lines`` hold no trailing newline; a line cut at the source's length cap is a
    :class:`CutLine`. ``read_at`` is the reading of the clock's
    ``monotonic()`` when the batch was read; the pipeline's latency histogram
    measures from it. ``seq`` is the batch's number for acknowledged delivery
    (:meth:`aisentinel.sources.base.Source.ack`), 0 when the source is not told of it.
    ``origin`` numbers the byte stream the lines were read from: the source's lines of
    one number continue each other, in order, and the lines of a number not seen before
    continue none read before (a file source takes a new one for each file it opens and
    each time it reads a file again from its start, see :mod:`aisentinel.sources.file`);
    0, the default, for a source of one stream. The pipeline tells the parser
    (:meth:`aisentinel.parsers.base.Parser.begin`), so that one joining a line split over
    several records (``container``) never joins pieces of two streams.
    """

    source: str
    parser: str
    lines: list[str]
    read_at: float
    seq: int = 0
    origin: int = 0


class EventBatch(NamedTuple):
    """Typed events made by a source itself from structured records (no parser).

    ``unparsed`` counts the records the source read that gave no event (for the
    journald source: entries that are not about authentication), so that a source's
    counters of items read, parsed and unparsed mean the same for both batch kinds.
    ``read_at`` and ``seq`` are as for :class:`LineBatch`. ``unrecognised`` counts the
    unparsed lines of no format the source can tell (a file source with ``parser =
    "auto"``: lines whose format could not be sniffed): they count against the source
    like lines its parser does not recognise (:class:`aisentinel.pipeline.Recognition`).
    ``judged``: the name of the format a source judges all its records by (``journald``:
    entries it can read, sshd's or the kernel's); every such batch then counts in that
    recognition window, ``unrecognised`` of it not of the format, so a source whose
    records are nearly all of another kind is reported blind and, later, seeing again.
    """

    source: str
    events: list[Event]
    read_at: float
    unparsed: int = 0
    seq: int = 0
    unrecognised: int = 0
    judged: str = ""


Batch = LineBatch | EventBatch
"""What a source hands on: lines for its parser, or events it made itself."""


# --------------------------------------------------------------------------- parsers


class SshKind(enum.StrEnum):
    """What an sshd line says about an authentication attempt."""

    FAILED_PASSWORD = "failed_password"  # noqa: S105 - an event kind, not a secret
    FAILED_PUBKEY = "failed_pubkey"
    INVALID_USER = "invalid_user"
    PREAUTH = "preauth"  # disconnect / connection closed before auth, bad protocol, etc.
    PAM_FAILURE = "pam_failure"
    MAX_AUTH = "max_auth"  # "maximum authentication attempts exceeded"
    NEGOTIATION = "negotiation"  # key exchange / protocol negotiation failed, bad banner
    TIMEOUT = "timeout"  # "Timeout before authentication" (LoginGraceTime)
    REFUSED = "refused"  # connection refused: tcp wrappers, MaxStartups, penalties
    ACCEPTED = "accepted"


class SshEvent(NamedTuple):
    """An sshd authentication event. ``client`` is a textual IPv4/IPv6 address;
    ``pid`` is the sshd process that logged it, when the log says; ``repeat`` how many
    times sshd logged it (rsyslog writes ``message repeated N times: [ MESSAGE]`` for
    N more of the line before: one event with ``repeat`` N)."""

    ts: float
    source: str
    client: str
    kind: SshKind
    user: str | None
    port: int | None
    pid: int | None = None
    repeat: int = 1


class HttpRequest(NamedTuple):
    """One nginx access-log request.

    ``client`` is the peer address, or the forwarded one when the peer is a trusted
    proxy. ``key_id`` identifies an API key (a hash or prefix from the JSON log
    format), never the secret itself. ``referer`` is the ``Referer`` header as logged
    (``None`` when the log has ``-`` or no such field): a client's text, which the rules
    look at like the user agent.
    """

    ts: float
    source: str
    client: str
    method: str
    path: str
    status: int
    bytes_sent: int
    user: str | None
    user_agent: str
    request_time: float | None = None
    upstream_time: float | None = None
    key_id: str | None = None
    body: str | None = None
    host: str | None = None
    referer: str | None = None


class HttpAuthFailure(NamedTuple):
    """nginx error log: an auth_basic failure (``reason``: user_not_found, password_mismatch)."""

    ts: float
    source: str
    client: str
    user: str | None
    reason: str


class HttpRateLimited(NamedTuple):
    """nginx error log: ``limiting requests`` (limit_req) hit a client."""

    ts: float
    source: str
    client: str
    zone: str | None


# ``Event``, the union of everything a parser or an event source produces, is defined at
# the end of the module: it includes the GPU events.


# --------------------------------------------------------------------------- detectors


class Severity(enum.IntEnum):
    """How bad a finding is; decisions use it to pick ban or alert."""

    INFO = 10
    LOW = 20
    MEDIUM = 30
    HIGH = 40
    CRITICAL = 50

    @property
    def label(self) -> str:
        return self.name.lower()


# --------------------------------------------------------------------------- targets

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TargetKind(enum.StrEnum):
    """What a decision acts on: an address (or network), or a workload on this host."""

    ADDRESS = "address"
    WORKLOAD = "workload"


def canonical_address(text: str) -> IPAddress:
    """The address ``text`` names, in the form decisions use.

    IPv4-mapped IPv6 becomes IPv4 and an IPv6 zone (``%eth0``) is dropped, so one
    host has one text form (``str()`` of the result). Raises ``ValueError`` for
    anything that is not a single address.
    """
    addr = ipaddress.ip_address(text)
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return addr.ipv4_mapped
        if addr.scope_id is not None:
            return ipaddress.IPv6Address(int(addr))
    return addr


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")

NAT64_PREFIXES: tuple[ipaddress.IPv6Network, ...] = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)
"""The NAT64 prefixes (RFC 6052 well-known, RFC 8215 local-use): a NAT64 gateway
shows each IPv4 client to an IPv6-only server as one address of its prefix, so such
an address is one IPv4 host. Inside ``::/8``, which ``ipaddress`` calls reserved."""


def is_nat64(addr: IPAddress) -> bool:
    """Whether ``addr`` is inside a NAT64 prefix (:data:`NAT64_PREFIXES`)."""
    return addr.version == 6 and any(addr in net for net in NAT64_PREFIXES)


_EVERY_IPV4 = ipaddress.IPv4Network("0.0.0.0/0")


def nat64_ipv4(net: IPNetwork) -> ipaddress.IPv4Network | None:
    """The IPv4 clients whose NAT64 addresses ``net`` holds (one address: a /32), or
    ``None`` when it holds none. The IPv4 address is read from the last 32 bits, as a
    /96 NAT64 prefix embeds it (RFC 6052: the only length of ``64:ff9b::/96``, and how
    local-use prefixes are mostly laid out); a network wider than /96 inside NAT64 space
    holds every one of them."""
    if net.version != 6 or not any(net.overlaps(p) for p in NAT64_PREFIXES):
        return None
    if net.prefixlen < 96:
        return _EVERY_IPV4
    return ipaddress.IPv4Network((int(net.network_address) & 0xFFFFFFFF, net.prefixlen - 96))


def canonical_network(net: IPNetwork) -> IPNetwork:
    """``net`` with IPv4-mapped IPv6 (``::ffff:10.0.0.0/104``) folded to IPv4."""
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(_MAPPED):
        base = ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)
        return ipaddress.IPv4Network((base, net.prefixlen - 96))
    return net


@dataclass(frozen=True, slots=True, init=False)
class AddressTarget:
    """One address, or a network of them, validated and canonical.

    ``text`` is the canonical form: a single host is its address (``203.0.113.7``,
    ``2001:db8::1``), a wider network its CIDR (``2001:db8::/64``). Build one with
    :meth:`parse` or :meth:`host`; the network must be canonical already (IPv4-mapped
    IPv6 folded, host bits clear), which those constructors guarantee.

    Held as the network's first address and prefix length: :attr:`network` is built
    when asked for. An ``IPv4Network`` of one host costs about 600 bytes (its own
    dict, netmask, a closure for ``hosts``), this about 130 with its text, and the
    engine holds one per ban and per recently seen client (10,000 bans: 5 MB less).
    """

    address: IPAddress
    """The network's first address (the address itself for a host)."""
    prefixlen: int
    text: str = field(compare=False)
    kind: ClassVar[TargetKind] = TargetKind.ADDRESS

    def __init__(self, network: IPNetwork) -> None:
        address = network.network_address
        prefixlen = network.prefixlen
        object.__setattr__(self, "address", address)
        object.__setattr__(self, "prefixlen", prefixlen)
        host = prefixlen == network.max_prefixlen
        object.__setattr__(self, "text", str(address) if host else str(network))

    @property
    def network(self) -> IPNetwork:
        """The target as an ``ipaddress`` network (a /32 or /128 for a host)."""
        return ipaddress.ip_network((self.address, self.prefixlen))

    @property
    def is_host(self) -> bool:
        """Whether this is a single address (/32 or /128)."""
        return self.prefixlen == self.address.max_prefixlen

    @classmethod
    def _of(cls, address: IPAddress, prefixlen: int, text: str) -> AddressTarget:
        """A target from its fields as they are (no network object; callers keep them
        canonical)."""
        target = object.__new__(cls)
        object.__setattr__(target, "address", address)
        object.__setattr__(target, "prefixlen", prefixlen)
        object.__setattr__(target, "text", text)
        return target

    @classmethod
    def host(cls, addr: IPAddress, spelled: str | None = None) -> AddressTarget:
        """The target for one canonical address; ``spelled``, the text it was read from,
        becomes the target's text when it is the canonical one (so the detectors' key
        and the target share one string: a storm's 18,000 addresses held 1.1 MB less)."""
        text = str(addr)
        return cls._of(addr, addr.max_prefixlen, spelled if spelled == text else text)

    @classmethod
    def parse(cls, text: str) -> AddressTarget:
        """An address or a CIDR network in any spelling; ``ValueError`` otherwise.

        Host bits of a CIDR must be clear (``10.0.0.1/8`` is refused), so a stored
        target never silently widens.
        """
        if "/" not in text:
            return cls.host(canonical_address(text))
        head, _, bits = text.partition("/")
        if bits.isascii() and bits.isdigit() and "%" not in head:
            # ADDRESS/PREFIX, the ledger's form: masked in integers, no network object
            # (a restart reads every network ban back: 40 us each through ip_network).
            address = ipaddress.ip_address(head)
            prefixlen = int(bits)
            host_bits = address.max_prefixlen - prefixlen
            mapped = isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped
            if host_bits >= 0 and not mapped:
                if int(address) & ((1 << host_bits) - 1):
                    raise ValueError(f"{text} has host bits set")
                if host_bits == 0:
                    return cls.host(address)
                return cls._of(address, prefixlen, f"{address}/{prefixlen}")
        return cls(canonical_network(ipaddress.ip_network(text, strict=True)))

    def grouped(self, ipv6_prefix: int) -> AddressTarget:
        """An IPv6 host widened to its ``/ipv6_prefix`` network; anything else as is.

        One IPv6 host usually holds a whole /64 and can pick any address in it, so
        a ban of the /128 is trivially dodged. A NAT64 address (:func:`is_nat64`) is
        one IPv4 client behind a gateway, and its /64 holds every other one: it is
        never widened.
        """
        address = self.address
        if address.version != 6 or self.prefixlen <= ipv6_prefix or is_nat64(address):
            return self
        # The network masked off the address's integer: no ipaddress network objects
        # (two of them, and their text) for every IPv6 ban.
        host_bits = 128 - ipv6_prefix
        base = ipaddress.IPv6Address(int(address) >> host_bits << host_bits)
        return AddressTarget._of(base, ipv6_prefix, f"{base}/{ipv6_prefix}")

    def __str__(self) -> str:
        return self.text


class WorkloadKey(enum.StrEnum):
    """How a workload was identified (what :attr:`WorkloadTarget.id` holds)."""

    CONTAINER = "container"  # a container id
    UNIT = "unit"  # a systemd unit name
    CGROUP = "cgroup"  # a cgroup v2 path
    PID = "pid"  # a process id


WORKLOAD_TEXT_MAX = 512
"""Most characters of a workload's id or any of its names."""


@dataclass(frozen=True, slots=True)
class WorkloadTarget:
    """A workload on this host: a container, a systemd unit, a cgroup, or a process.

    ``identified_by`` says what ``id`` is (the container id, the unit name, the
    cgroup path or the pid); ``name`` is for people (a container's name, a process's
    command). ``unit``, ``container``, ``image`` and ``exe`` are what is known besides
    and what the workload allowlist matches. ``text`` (``unit:ollama.service``) is
    the canonical key. Text fields must be non-empty where given, printable, and at
    most :data:`WORKLOAD_TEXT_MAX` characters; a pid is decimal digits.
    """

    identified_by: WorkloadKey
    id: str
    name: str = ""
    unit: str | None = None
    container: str | None = None
    image: str | None = None
    exe: str | None = None
    text: str = field(init=False, compare=False)
    kind: ClassVar[TargetKind] = TargetKind.WORKLOAD

    def __post_init__(self) -> None:
        key = WorkloadKey(self.identified_by)
        object.__setattr__(self, "identified_by", key)
        for label in ("id", "name", "unit", "container", "image", "exe"):
            value = getattr(self, label)
            if value is None or (label == "name" and value == ""):
                continue
            if not isinstance(value, str) or not value or not value.isprintable():
                raise ValueError(f"workload {label} must be non-empty printable text")
            if len(value) > WORKLOAD_TEXT_MAX:
                raise ValueError(f"workload {label} is longer than {WORKLOAD_TEXT_MAX} characters")
        if key is WorkloadKey.PID and not (self.id.isascii() and self.id.isdigit()):
            raise ValueError(f"a pid is decimal digits, not {self.id!r}")
        object.__setattr__(self, "text", f"{key.value}:{self.id}")

    @property
    def display(self) -> str:
        """The name people know it by: ``name``, else the id."""
        return self.name or self.id

    def fields(self) -> dict[str, str]:
        """The workload's fields, for the ledger and JSON output (``None`` ones left out)."""
        out = {"identified_by": self.identified_by.value, "id": self.id}
        for label in ("name", "unit", "container", "image", "exe"):
            value = getattr(self, label)
            if value:
                out[label] = value
        return out

    @classmethod
    def from_fields(cls, fields: dict[str, Any]) -> WorkloadTarget:
        """The inverse of :meth:`fields`; ``ValueError``/``TypeError`` on bad input."""
        known = {"identified_by", "id", "name", "unit", "container", "image", "exe"}
        extra = set(fields) - known
        if extra:
            raise ValueError(f"unknown workload fields: {sorted(extra)}")
        return cls(**fields)

    def __str__(self) -> str:
        return self.text


Target = AddressTarget | WorkloadTarget
"""What a decision acts on."""


@dataclass(frozen=True, slots=True)
class Finding:
    """A detector's conclusion about one key (usually a client address).

    ``client`` is the address to act on, or ``None`` when the finding is about
    something that cannot be banned (for example one username from many addresses,
    where ``clients`` lists the addresses seen). ``target`` says what the finding is
    about when that is not simply ``client``: a workload (a container, unit, cgroup
    or process), or an address target built by the detector. When it is ``None``
    the decision engine derives the target from ``client``.
    """

    ts: float
    detector: str
    severity: Severity
    client: str | None
    key: str
    count: int
    window: float
    message: str
    evidence: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    source: str = ""
    target: Target | None = None
    topic: str = ""
    """What the detector found about ``key``, when it finds several kinds of thing (a
    rule's id, what a window counts, the secret seen): an alert about one topic holds
    back the repeats of that topic only (``alert_repeat``)."""


# --------------------------------------------------------------------------- decisions


class Action(enum.StrEnum):
    """What a decision asks the responders to do.

    BAN acts on address targets; THROTTLE and FREEZE on workload targets (the engine's
    policy maps findings to them, off by default: a workload finding is an ALERT).
    """

    BAN = "ban"
    THROTTLE = "throttle"
    FREEZE = "freeze"
    ALERT = "alert"
    NONE = "none"

    @property
    def enforces(self) -> bool:
        """Whether responders act on it (ban, throttle, freeze)."""
        return self in ENFORCING


ENFORCING = frozenset({Action.BAN, Action.THROTTLE, Action.FREEZE})
"""Actions a responder enforces; each lasts a TTL and is lifted when it ends."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What aisentinel does (or would do) about a finding.

    ``target`` is what it acts on: a validated, canonical address or network
    (:class:`AddressTarget`), or a workload (:class:`WorkloadTarget`); ``None`` when
    there is nothing single to act on.
    ``simulated`` is true when the engine runs in simulate mode: the decision is
    recorded but no responder acts. ``reason`` says why, in particular why nothing
    is done (allowlisted, already banned, alert-only detector).
    ``quiet_until`` is set when an enforcement of the target is in force after this
    decision (this one, or the one that made it "already banned"): until then the
    pipeline hands on no finding of that detector about that key (see
    ``Pipeline._hush``); on an ALERT, until when the detector's findings about the key
    at that severity or below are held back (``alert_repeat``, ``Pipeline._hold_back``).
    It is not part of the output. ``braked`` marks an ALERT that the mass-ban brake made
    of a ban (its reason says so too); the daemon logs few of those one by one.
    """

    ts: float
    action: Action
    target: Target | None
    detector: str
    severity: Severity
    reason: str
    ttl: float | None = None
    expires_at: float | None = None
    offence: int = 1
    simulated: bool = False
    evidence_count: int = 0
    finding: Finding | None = field(default=None, compare=False)
    quiet_until: float | None = field(default=None, compare=False)
    braked: bool = field(default=False, compare=False)


# --------------------------------------------------------------------------- output


def finding_fields(finding: Finding) -> dict[str, Any]:
    """A finding as log/JSON fields."""
    return {
        "detector": finding.detector,
        "severity": finding.severity.label,
        "client": finding.client,
        "key": finding.key,
        "count": finding.count,
        "window": finding.window,
        "message": finding.message,
        "evidence": list(finding.evidence),
        "source": finding.source,
        **({"target": finding.target.text} if finding.target is not None else {}),
        **({"clients": list(finding.clients)} if finding.clients else {}),
    }


def decision_fields(decision: Decision) -> dict[str, Any]:
    """A decision as log/JSON fields."""
    return {
        "action": decision.action.value,
        "target": None if decision.target is None else decision.target.text,
        "target_kind": None if decision.target is None else decision.target.kind.value,
        **(
            {"workload": decision.target.fields()}
            if isinstance(decision.target, WorkloadTarget)
            else {}
        ),
        "detector": decision.detector,
        "severity": decision.severity.label,
        "reason": decision.reason,
        "ttl": decision.ttl,
        "expires_at": decision.expires_at,
        "offence": decision.offence,
        "simulated": decision.simulated,
        "evidence_count": decision.evidence_count,
        **(
            {"clients": list(decision.finding.clients)}
            if decision.finding is not None and decision.finding.clients
            else {}
        ),
    }


# --------------------------------------------------------------------------- GPUs
#
# Values from the GPU sampler (aisentinel/gpu/). A few per GPU per second, so frozen
# slotted dataclasses; read them by field name. Units follow Prometheus conventions:
# bytes, ratios 0-1, celsius, watts, joules. ``None`` means the GPU or driver does not
# report that value (NVML_ERROR_NOT_SUPPORTED) or reading it failed.


@dataclass(frozen=True, slots=True)
class ProcessAttribution:
    """Who runs a GPU process, read from ``/proc/PID``.

    ``exe`` is the ``/proc/PID/exe`` link (None without permission, e.g. another user's
    process when not root); ``cmdline`` is capped. ``unit`` is the systemd unit and
    ``container_id`` / ``container_runtime`` (docker, containerd, cri-o, podman,
    kubernetes) come from ``/proc/PID/cgroup``; ``container_name`` and
    ``container_image`` from a resolver (the Docker API) when one is configured, for a
    container of the host's Docker engine only (never one with a ``cgroup``).
    ``unit`` is a unit of the host's system manager only, not one of a user's manager,
    a machine or a container (a user may name one ``ollama.service``); ``cgroup`` is then
    the workload's cgroup path, and so it is for a container that the host's Docker
    engine does not run (Podman, containerd, CRI-O, Kubernetes, a rootless Docker).
    ``comm`` is the command name from ``/proc/PID/stat`` (readable for every process):
    the kernel sets it to the executed file's name, at most 15 characters, and only the
    process itself changes it (unlike ``cmdline[0]``, which it chooses at exec). All of
    it is process-controlled text: escape it for human output.
    """

    pid: int
    exe: str | None
    cmdline: tuple[str, ...]
    uid: int | None
    user: str | None
    unit: str | None
    container_id: str | None = None
    container_runtime: str | None = None
    container_name: str | None = None
    start_time: int | None = None
    comm: str | None = None
    container_image: str | None = None
    cgroup: str | None = None

    def workload_cgroup(self) -> str | None:
        """``cgroup`` where it names the workload (a ``cgroup:`` target and metrics label):
        plain text of at most :data:`WORKLOAD_TEXT_MAX` characters; else None (the
        workload is then the process)."""
        cg = self.cgroup
        return cg if cg is not None and escape(cg) == cg and len(cg) <= WORKLOAD_TEXT_MAX else None

    def label(self) -> str:
        """``container ollama``, ``unit vllm.service`` or ``pid 4242 /tmp/.x/xmrig``."""
        if self.container_id is not None:
            return f"container {self.container_name or self.container_id[:12]}"
        if self.unit is not None and self.unit.endswith(".service"):
            return f"unit {self.unit}"
        what = self.exe or (self.cmdline[0] if self.cmdline else "?")
        return f"pid {self.pid} {what}"


@dataclass(frozen=True, slots=True)
class GpuProcessSample:
    """One process on one GPU (or, with ``count`` > 1, the sum of several: pid 0)."""

    gpu_index: int
    gpu_uuid: str
    pid: int
    kind: str  # "compute", "graphics", "both" (or "other" for a summed entry)
    used_memory_bytes: int | None
    sm_util: float | None
    memory_util: float | None
    attribution: ProcessAttribution | None = None
    count: int = 1


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU at one sampling instant. ``lost``: it fell off the bus; gauges are None."""

    ts: float
    index: int
    uuid: str
    name: str
    pci_bus_id: str | None
    lost: bool
    utilization_gpu: float | None
    utilization_memory: float | None
    memory_total_bytes: int | None
    memory_used_bytes: int | None
    memory_free_bytes: int | None
    memory_reserved_bytes: int | None
    temperature_celsius: float | None
    power_watts: float | None
    energy_joules: float | None
    ecc_corrected: int | None
    ecc_uncorrected: int | None
    throttle_reasons: int | None
    mig_enabled: bool | None
    processes: tuple[GpuProcessSample, ...] = ()


@dataclass(frozen=True, slots=True)
class XidEvent:
    """A GPU Xid error, from NVML's event API (``source="nvml"``) or a kernel log line.

    ``pci_bus_id`` is normalised to ``dddd:bb:dd`` (lower case, no function) so the two
    sources match; ``process_name`` and ``message`` come from the kernel line (untrusted).
    """

    ts: float
    xid: int
    source: str
    gpu_index: int | None = None
    gpu_uuid: str | None = None
    pci_bus_id: str | None = None
    pid: int | None = None
    process_name: str | None = None
    message: str = ""


Event = SshEvent | HttpRequest | HttpAuthFailure | HttpRateLimited | GpuSample | XidEvent
"""Everything a parser (or an event source) can produce: parsed log events, and the GPU
events of the ``nvml`` source (and kernel Xid lines of the ``journald`` source)."""
