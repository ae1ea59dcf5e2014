"""The parser contract: a pure function from one log line to a typed event or ``None``.

Parsers are classes only so that they can hold per-source settings (trusted proxies,
the year for syslog timestamps that lack one) and caches (timestamp text -> epoch).
``parse`` must not do I/O, must not raise on any input (a line it does not recognise
returns ``None`` and is counted as unparsed by the caller), and must be fast: it runs
once per line. Addresses in events are textual and syntactically checked by the
regex; they are validated with :mod:`ipaddress` before they reach a firewall.
"""

from __future__ import annotations

import ipaddress
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

from aisentinel.clock import Clock, SystemClock
from aisentinel.configtypes import Network, StrictModel
from aisentinel.events import Event
from aisentinel.registry import Registry


class ParsersConfig(StrictModel):
    """``[parsers]``: settings shared by all parsers."""

    trusted_proxies: tuple[Network, ...] = ()
    """Peers whose ``X-Forwarded-For`` / real-IP value is believed. Empty: trust no one."""


@dataclass(frozen=True, slots=True)
class ParserContext:
    """What a parser may know besides the line."""

    source: str = "replay"
    clock: Clock = field(default_factory=SystemClock)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()


class Parser(ABC):
    """Turns lines of one format into events. Register subclasses in ``REGISTRY``."""

    name: ClassVar[str]

    def __init__(self, ctx: ParserContext) -> None:
        self.ctx = ctx
        self.source = ctx.source

    @abstractmethod
    def parse(self, line: str) -> Event | None:
        """The event this line describes, or ``None`` (not this format, or irrelevant)."""


REGISTRY: Registry[type[Parser]] = Registry("parser")
"""Parsers by name; each plug-in module registers itself in one line."""
