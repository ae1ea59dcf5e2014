"""Prompt-attack scanning for applications: ``scan(text) -> Verdict``.

Rules plus a small linear model over character and word n-grams, trained by
``bench/train_guard.py`` and shipped as ``aisentinel/data/guard-model.json``. Pure
Python: importing this package pulls in nothing of the daemon (no pydantic, structlog,
prometheus_client, watchdog) and no numpy. See docs/guard.md.
"""

from aisentinel.guard.bodies import PromptBody, extract_prompt
from aisentinel.guard.model import GuardModel, default_model
from aisentinel.guard.scanner import (
    MAX_SCAN_CHARS,
    Finding,
    SanitizeResult,
    Verdict,
    sanitize_prompt,
    scan,
)
from aisentinel.guard.secrets import SecretFinding, find_secrets, redact_secrets

__all__ = [
    "MAX_SCAN_CHARS",
    "Finding",
    "GuardModel",
    "PromptBody",
    "SanitizeResult",
    "SecretFinding",
    "Verdict",
    "default_model",
    "extract_prompt",
    "find_secrets",
    "redact_secrets",
    "sanitize_prompt",
    "scan",
]
