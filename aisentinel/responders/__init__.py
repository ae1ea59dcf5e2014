"""The responders stage: enforce bans (or pretend to), retried by the runner.

- :mod:`~aisentinel.responders.base`: the :class:`Responder` contract and ``REGISTRY``.
- :mod:`~aisentinel.responders.runner`: :class:`ResponderRunner` (retries, back-off, stats).
- plug-ins, one module each, registered by name: ``dryrun``.
"""

from aisentinel.responders import dryrun
from aisentinel.responders.base import (
    REGISTRY,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
)
from aisentinel.responders.dryrun import DryRunAction, DryRunConfig, DryRunResponder
from aisentinel.responders.runner import Operation, ResponderRunner, ResponderStats

__all__ = [
    "REGISTRY",
    "DryRunAction",
    "DryRunConfig",
    "DryRunResponder",
    "Operation",
    "Responder",
    "ResponderConfigBase",
    "ResponderError",
    "ResponderHealth",
    "ResponderRunner",
    "ResponderStats",
    "dryrun",
]
