"""Prompt-attack scanning for applications: ``scan(text) -> Verdict``.

Rules plus a small linear model over character and word n-grams, trained by
``bench/train_guard.py`` and shipped as ``aisentinel/data/guard-model.json``. Pure
Python: importing this package pulls in nothing of the daemon (no pydantic, structlog,
prometheus_client, watchdog) and no numpy. See docs/guard.md.
"""

from aisentinel.guard.model import GuardModel, default_model
from aisentinel.guard.scanner import (
    MAX_SCAN_CHARS,
    Finding,
    SanitizeResult,
    Verdict,
    sanitize_prompt,
    scan,
)

__all__ = [
    "MAX_SCAN_CHARS",
    "Finding",
    "GuardModel",
    "SanitizeResult",
    "Verdict",
    "default_model",
    "sanitize_prompt",
    "scan",
]
