"""The audit checks, one module per family, each registering its checks by id.

Import order is report order. Adding a family: write ``checks/<family>.py`` with
``register(...)`` lines at the bottom and import it here.
"""

# isort: off
from aisentinel.audit.checks import (  # noqa: F401 - imported for their registrations
    firewall,
    exposure,
    unauth,
    nginx,
    fail2ban,
    docker,
    systemd,
    ssh,
    self,
)

# isort: on
from aisentinel.audit.checks.base import CHECKS, CannotCheckError, Check, Verdict, register

__all__ = ["CHECKS", "CannotCheckError", "Check", "Verdict", "register"]
