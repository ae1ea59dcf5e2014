"""The decisions stage: findings become bans or alerts, bans are persisted.

- :class:`DecisionsConfig`: the ``[decisions]`` table.
- :class:`Allowlist`: addresses that are never banned (loopback, host, configured);
  :class:`WorkloadAllowlist`: workloads never throttled or frozen.
- :class:`DecisionEngine`: ``decide(finding) -> Decision``, active bans, expiry.
- :class:`Ledger`: the SQLite history that survives restarts and feeds escalation.
"""

from aisentinel.decisions.allowlist import (
    LOOPBACK,
    Allowlist,
    WorkloadAllowlist,
    canonical_address,
    read_host_addresses,
)
from aisentinel.decisions.config import DecisionsConfig
from aisentinel.decisions.engine import DecisionCounters, DecisionEngine, ban_ttl
from aisentinel.decisions.ledger import Ledger, LedgerCorruptError

__all__ = [
    "LOOPBACK",
    "Allowlist",
    "DecisionCounters",
    "DecisionEngine",
    "DecisionsConfig",
    "Ledger",
    "LedgerCorruptError",
    "WorkloadAllowlist",
    "ban_ttl",
    "canonical_address",
    "read_host_addresses",
]
