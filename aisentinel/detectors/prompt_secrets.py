"""``prompt_secrets``: secrets and personal data sent in prompts (data leakage).

Consumes :class:`~aisentinel.events.HttpRequest` with a body on the AI API paths (see
:mod:`~.prompts`) and looks for what :func:`aisentinel.guard.find_secrets` finds:
private keys, cloud and API keys, tokens, JWTs, passwords and URLs with credentials,
Luhn-valid card numbers and e-mail addresses in bulk, also percent-encoded and inside
base64/hex blobs. A
client's first such prompt is a finding of ``severity`` (default MEDIUM: an alert under
the default policy: a user pasting a key is a leak to stop, not an attacker to ban);
then the client is quiet for ``window``, and the next finding counts the prompts since.

The secret itself is never kept: the evidence holds the kinds and the redacted forms
(``AKIA…[20 chars]…MPLE``, ``card …1111``), the request line has no query string (see
:func:`~.prompts.request_line`), and only the system text and the last turn are looked
at (see :class:`~.prompts.PromptFacts`), so a chat that keeps sending its history does
not report one paste over and over.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import field_validator

from aisentinel.decisions.config import SeverityName
from aisentinel.detectors.base import REGISTRY, BatchDetector
from aisentinel.detectors.common import Window, client_finding, client_key
from aisentinel.detectors.prompts import (
    MEMO,
    PromptDetectorConfig,
    PromptRequests,
    request_line,
)
from aisentinel.detectors.window import EventWindows
from aisentinel.events import Event, Finding, HttpRequest, Severity

SECRET_KINDS = (
    "private_key",
    "aws_access_key",
    "aws_secret_key",
    "azure_account_key",
    "azure_client_secret",
    "url_credentials",
    "password",
    "api_token",
    "github_token",
    "gitlab_token",
    "slack_token",
    "openai_key",
    "anthropic_key",
    "google_api_key",
    "huggingface_token",
    "stripe_key",
    "npm_token",
    "pypi_token",
    "jwt",
    "credit_card",
    "email_bulk",
)
"""What :func:`~aisentinel.guard.find_secrets` reports, by kind."""

_MAX_SAMPLE_KINDS = 4


class PromptSecretsConfig(PromptDetectorConfig):
    """``[detectors.prompt_secrets]``."""

    kinds: tuple[str, ...] = SECRET_KINDS
    """The kinds that make a finding (leave out ``email_bulk`` for a mailing assistant)."""
    severity: SeverityName = Severity.MEDIUM
    window: Window = 600.0
    """After a finding, the client is quiet this long (prompts are still counted)."""

    @field_validator("kinds")
    @classmethod
    def _known(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = sorted(set(kinds) - set(SECRET_KINDS))
        if unknown:
            raise ValueError(f"unknown secret kinds {unknown}: use {', '.join(SECRET_KINDS)}")
        return kinds


class PromptSecretsDetector(BatchDetector):
    """Secrets in prompts, one finding per client and window, redacted evidence only."""

    name = "prompt_secrets"
    consumes = (HttpRequest,)

    def __init__(self, config: PromptSecretsConfig) -> None:
        super().__init__(config)
        self._cfg = config
        self._kinds = frozenset(config.kinds)
        self._requests = PromptRequests(config.paths)
        self._windows = EventWindows(1, config.window, config.max_keys)

    def observe_many(self, events: Sequence[Event]) -> list[tuple[int, Finding]]:
        picked = self._requests.pick(events)
        if not picked:
            return []
        out: list[tuple[int, Finding]] = []
        kinds = self._kinds
        for i, event, body in picked:
            facts = MEMO.get(events, i, body, self._cfg)
            found = [f for f in facts.secrets if f.kind in kinds]
            if not found:
                continue
            shown: list[str] = []
            for f in found:
                item = f"{f.kind} {f.redacted}"
                if item not in shown:
                    shown.append(item)
            more = len(shown) - _MAX_SAMPLE_KINDS
            sample = ", ".join(shown[:_MAX_SAMPLE_KINDS]) + (f" (+{more} more)" if more > 0 else "")
            crossing = self._windows.hit(client_key(event.client), event.ts, sample)
            if crossing is None:
                continue
            out.append(
                (
                    i,
                    client_finding(
                        self.name,
                        crossing,
                        event,
                        severity=self._cfg.severity,
                        what="prompts with secrets or personal data",
                        threshold=1,
                        window=self._cfg.window,
                        evidence=(*crossing.evidence, request_line(event)),
                        # The secrets this report names (its window's, incl. those seen
                        # while it was quiet): a new one is news, the same ones a repeat.
                        topic="\n".join(sorted(set(crossing.evidence))),
                    ),
                )
            )
        return out

    def expire(self, now: float) -> int:
        return self._windows.expire(now)

    def tracked_keys(self) -> int:
        return len(self._windows)


REGISTRY.register("prompt_secrets", PromptSecretsConfig, PromptSecretsDetector)
