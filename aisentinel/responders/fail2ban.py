"""The ``fail2ban`` responder: bans handed to a running fail2ban, in aisentinel's jail.

For sites that already run fail2ban and want one place of truth for bans: the
package ships the jail (``/etc/fail2ban/jail.d/aisentinel.conf``: a filter that
matches nothing, the site's own ban action, ``bantime = -1``) and this responder
drives it with ``fail2ban-client [-s SOCKET] set JAIL banip ADDR...`` and ``unbanip
ADDR...``, one client run per batch, through the command runner (argument list,
timeout, no shell). fail2ban 1.0's ``banip`` takes no per-ban time, so a ban stays
until aisentinel lifts it when its TTL ends; ``reconcile`` reads the jail's list
(``get JAIL banip``) and bans what is missing and lifts what the ledger does not
know (``reconcile_adding``, on a run whose ledger is not the whole truth: only
bans). Every address is parsed again right before it is written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from pathlib import Path

import structlog
from pydantic import Field

from aisentinel.clock import Clock
from aisentinel.commands import CommandError, CommandRunner
from aisentinel.events import Decision
from aisentinel.responders.base import (
    REGISTRY,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
    checked,
)

log = structlog.get_logger(__name__)

CLIENT = "fail2ban-client"


class Fail2banConfig(ResponderConfigBase):
    """``[responders.fail2ban]``."""

    jail: str = Field(default="aisentinel", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    """The jail bans go into (the shipped one is ``aisentinel``)."""
    socket: Path | None = None
    """fail2ban's socket (default: fail2ban's own, /run/fail2ban/fail2ban.sock)."""
    command_timeout: float = Field(default=30.0, ge=0.5, le=300.0, allow_inf_nan=False)
    """Seconds one fail2ban-client run may take; 0.5-300."""

    def owns(self) -> str:
        return f"jail {self.jail}" + (f" at {self.socket}" if self.socket is not None else "")


class Fail2banResponder(Responder):
    """Bans into a fail2ban jail through ``fail2ban-client``."""

    name = "fail2ban"

    def __init__(
        self,
        config: Fail2banConfig,
        *,
        clock: Clock,
        commands: CommandRunner | None = None,
        state_dir: Path | None = None,
    ) -> None:
        super().__init__(config, clock=clock, commands=commands, state_dir=state_dir)
        self.cfg = config
        self._adds: list[str] = []
        self._deletes: list[str] = []

    def _argv(self, *args: str) -> list[str]:
        sock = ["-s", str(self.cfg.socket)] if self.cfg.socket is not None else []
        return [CLIENT, *sock, *args]

    def _run(self, *args: str) -> str:
        try:
            result = self.commands.run(self._argv(*args), timeout=self.cfg.command_timeout)
        except CommandError as exc:
            raise ResponderError(f"fail2ban: {exc}") from None
        if not result.ok:
            if f"NOK: ('{self.cfg.jail}',)" in result.stderr + result.stdout:
                raise ResponderError(
                    f"fail2ban: jail {self.cfg.jail} does not exist in fail2ban (install "
                    "/etc/fail2ban/jail.d/aisentinel.conf, see docs/enforcement.md; then "
                    "`fail2ban-client reload`)"
                )
            raise ResponderError(f"fail2ban: {result.message()}")
        return result.stdout

    def add_many(self, decisions: Sequence[Decision]) -> None:
        self._adds += [t for t in map(checked, decisions) if t is not None]

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        self._deletes += [t for t in map(checked, decisions) if t is not None]

    def discard(self) -> None:
        self._adds, self._deletes = [], []

    def commit(self) -> None:
        adds, deletes = self._adds, self._deletes
        self._adds, self._deletes = [], []
        if deletes:
            self._run("set", self.cfg.jail, "unbanip", *deletes)
        if adds:
            self._run("set", self.cfg.jail, "banip", *adds)

    def banned(self) -> set[str]:
        """What the jail holds now (``get JAIL banip``)."""
        out = self._run("get", self.cfg.jail, "banip")
        return {word for word in out.replace(",", " ").split() if _is_address(word)}

    def reconcile(self, active: Sequence[Decision]) -> None:
        self._reconcile(active, lift=True)

    def reconcile_adding(self, active: Sequence[Decision]) -> None:
        """Ban what the jail lacks; unban nothing (its bans have no time of their own:
        those the ledger does not know stay until a reconcile after `aisentinel ledger
        accept` lifts them)."""
        self._reconcile(active, lift=False)

    def _reconcile(self, active: Sequence[Decision], *, lift: bool) -> None:
        now = self.clock.now()
        wanted = {t for d in active if (d.expires_at or now + 1) > now for t in [checked(d)] if t}
        held = self.banned()
        stale = sorted(held - wanted) if lift else []
        missing = sorted(wanted - held)
        if stale:
            self._run("set", self.cfg.jail, "unbanip", *stale)
        if missing:
            self._run("set", self.cfg.jail, "banip", *missing)
        log.info(
            "fail2ban reconciled",
            jail=self.cfg.jail,
            bans=len(wanted),
            added=len(missing),
            removed=len(stale),
        )

    def withdraw(self) -> str:
        """Unban every address of the jail (it holds only aisentinel's bans)."""
        held = sorted(self.banned())
        if held:
            self._run("set", self.cfg.jail, "unbanip", *held)
        return f"{len(held)} addresses unbanned from jail {self.cfg.jail}"

    def health(self) -> ResponderHealth:
        try:
            self._run("status", self.cfg.jail)
        except ResponderError as exc:
            return ResponderHealth(ok=False, detail=str(exc))
        return ResponderHealth(ok=True, detail=f"jail {self.cfg.jail} answers")


def _is_address(word: str) -> bool:
    try:
        ipaddress.ip_network(word, strict=False)
    except ValueError:
        return False
    return True


REGISTRY.register("fail2ban", Fail2banConfig, Fail2banResponder)
