"""The responders stage: enforce bans, throttles, freezes (or pretend to) on a worker thread.

- :mod:`~aisentinel.responders.base`: the :class:`Responder` contract and ``REGISTRY``.
- :mod:`~aisentinel.responders.runner`: :class:`ResponderRunner`, the worker (queue, thread,
  batches, retries, back-off, stats, ``collect()``).
- plug-ins, one module each, registered by name: ``dryrun``, ``nftables``, ``ufw``,
  ``fail2ban``, ``throttle``.
"""

from aisentinel.responders import dryrun, fail2ban, nftables, throttle, ufw
from aisentinel.responders.base import (
    REGISTRY,
    PartialError,
    ReconcileUnfinishedError,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
)
from aisentinel.responders.dryrun import DryRunAction, DryRunBatch, DryRunConfig, DryRunResponder
from aisentinel.responders.runner import Operation, ResponderRunner, ResponderStats

__all__ = [
    "REGISTRY",
    "DryRunAction",
    "DryRunBatch",
    "DryRunConfig",
    "DryRunResponder",
    "Operation",
    "PartialError",
    "ReconcileUnfinishedError",
    "Responder",
    "ResponderConfigBase",
    "ResponderError",
    "ResponderHealth",
    "ResponderRunner",
    "ResponderStats",
    "dryrun",
    "fail2ban",
    "nftables",
    "throttle",
    "ufw",
]
