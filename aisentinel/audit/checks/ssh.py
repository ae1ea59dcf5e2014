"""SSH: no password authentication, no root login (from ``sshd -T``).

``sshd -T`` prints the effective global settings (lower-case keys); ``Match``
blocks are not evaluated. When sshd is not installed and nothing listens on the
SSH ports the checks pass ("not installed").
"""

from __future__ import annotations

from aisentinel.audit.checks.base import CannotCheckError, Verdict, register
from aisentinel.audit.checks.exposure import all_listeners
from aisentinel.audit.context import AuditContext
from aisentinel.audit.model import Status

DROPIN = "/etc/ssh/sshd_config.d/00-aisentinel.conf"
RELOAD = "sshd -t && systemctl reload ssh   # keep this session open and test a key login first"


def parse_sshd_t(text: str) -> dict[str, str]:
    """``{key: value}`` from ``sshd -T`` output (first value of each key)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key and key not in out:
            out[key.lower()] = value.strip()
    return out


def sshd_settings(ctx: AuditContext) -> dict[str, str] | None:
    """Effective sshd settings (once per run); ``None`` when sshd is not installed."""

    def load() -> dict[str, str] | None:
        if not ctx.has_tool("sshd"):
            ports = set(ctx.config.ssh_ports)
            busy = [str(s) for s in all_listeners(ctx) if s.port in ports]
            if busy:
                raise CannotCheckError(f"sshd not found but {', '.join(busy)} listens")
            return None
        result = ctx.tool("sshd", "-T")
        if not result.ok:
            raise CannotCheckError(result.message())
        settings = parse_sshd_t(result.stdout)
        if "permitrootlogin" not in settings:
            raise CannotCheckError("sshd -T printed no settings")
        return settings

    return ctx.memo("sshd", load)


def _not_installed() -> Verdict:
    return Verdict.of(Status.PASS, ["sshd is not installed and nothing listens on the SSH ports"])


def _password_auth(ctx: AuditContext) -> Verdict:
    settings = sshd_settings(ctx)
    if settings is None:
        return _not_installed()
    password = settings.get("passwordauthentication", "yes")
    kbd = settings.get(
        "kbdinteractiveauthentication", settings.get("challengeresponseauthentication", "no")
    )
    pam = settings.get("usepam", "no")
    evidence = [
        f"passwordauthentication {password}",
        f"kbdinteractiveauthentication {kbd}",
        f"usepam {pam}",
    ]
    fix = (
        f"printf 'PasswordAuthentication no\\nKbdInteractiveAuthentication no\\n' > {DROPIN}\n"
        f"{RELOAD}"
    )
    if password == "yes":  # noqa: S105 - an sshd setting, not a secret
        return Verdict.of(Status.FAIL, evidence, fix)
    if kbd == "yes" and pam == "yes":
        return Verdict.of(
            Status.FAIL, [*evidence, "keyboard-interactive via PAM asks for passwords"], fix
        )
    return Verdict.of(Status.PASS, evidence)


def _root_login(ctx: AuditContext) -> Verdict:
    settings = sshd_settings(ctx)
    if settings is None:
        return _not_installed()
    value = settings.get("permitrootlogin", "")
    fix = f"echo 'PermitRootLogin no' >> {DROPIN}\n{RELOAD}"
    evidence = [f"permitrootlogin {value}"]
    if value == "no":
        return Verdict.of(Status.PASS, evidence)
    if value in ("prohibit-password", "without-password", "forced-commands-only"):
        return Verdict.of(Status.WARN, [*evidence, "root may log in with a key"], fix)
    return Verdict.of(Status.FAIL, evidence, fix)


register("ssh.password-auth", "SSH password authentication is off", _password_auth)
register("ssh.root-login", "SSH root login is off", _root_login)
