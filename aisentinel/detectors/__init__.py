"""Detectors: typed events in, findings out, with bounded per-key windows.

Each plug-in module registers itself in ``REGISTRY`` under the name of its
``[detectors.<name>]`` config table; this package imports them all explicitly.
:func:`build_detectors` builds the enabled ones from validated configs; a
detector without a config table runs with its defaults, which are the
production defaults.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, cast

from aisentinel.detectors import (
    ai_recon,
    credential_stuffing,
    gpu_memory,
    gpu_spike,
    gpu_theft,
    gpu_workload,
    http_auth,
    model_exploit,
    prompt_injection,
    prompt_secrets,
    rate_abuse,
    rules,
    scanning,
    ssh_bruteforce,
)
from aisentinel.detectors.ai_recon import AiReconConfig
from aisentinel.detectors.base import REGISTRY, Detector, DetectorConfigBase, WindowedConfig
from aisentinel.detectors.credential_stuffing import CredentialStuffingConfig
from aisentinel.detectors.http_auth import HttpAuthConfig
from aisentinel.detectors.model_exploit import ModelExploitConfig
from aisentinel.detectors.prompt_injection import PromptInjectionConfig
from aisentinel.detectors.prompt_secrets import PromptSecretsConfig
from aisentinel.detectors.rate_abuse import RateAbuseConfig
from aisentinel.detectors.rules import RulesConfig
from aisentinel.detectors.scanning import ScanningConfig
from aisentinel.detectors.shared import SharedState
from aisentinel.detectors.ssh_bruteforce import SshBruteforceConfig

__all__ = [
    "REGISTRY",
    "AiReconConfig",
    "CredentialStuffingConfig",
    "Detector",
    "DetectorConfigBase",
    "HttpAuthConfig",
    "ModelExploitConfig",
    "PromptInjectionConfig",
    "PromptSecretsConfig",
    "RateAbuseConfig",
    "RulesConfig",
    "ScanningConfig",
    "SharedState",
    "SshBruteforceConfig",
    "WindowedConfig",
    "build_detectors",
    "default_configs",
]

_PLUGINS = (
    ssh_bruteforce,
    http_auth,
    credential_stuffing,
    rate_abuse,
    scanning,
    ai_recon,
    model_exploit,
    prompt_injection,
    prompt_secrets,
    rules,
    gpu_workload,
    gpu_theft,
    gpu_memory,
    gpu_spike,
)  # imported for their REGISTRY.register side effect


class _SharingFactory(Protocol):
    """A detector class with ``wants_shared = True``."""

    def __call__(self, config: DetectorConfigBase, *, shared: SharedState | None) -> Detector: ...


def default_configs() -> dict[str, DetectorConfigBase]:
    """Every registered detector's default config, by name."""
    configs: dict[str, DetectorConfigBase] = {}
    for entry in REGISTRY:
        config = entry.config_model()
        if not isinstance(config, DetectorConfigBase):
            raise TypeError(f"detector {entry.name!r}: config model is not a DetectorConfigBase")
        configs[entry.name] = config
    return configs


def build_detectors(
    configs: Mapping[str, DetectorConfigBase], *, shared: SharedState | None = None
) -> list[Detector]:
    """The enabled detectors, in registration order.

    A registered detector missing from ``configs`` gets its default config. A name
    that is not registered raises ``KeyError`` naming the known ones; a config of
    the wrong model raises ``TypeError``; a path list that cannot be read raises
    ``OSError``/``ValueError`` naming the file. Detectors that declare
    ``wants_shared`` all get ``shared`` (a new :class:`~.shared.SharedState` when
    ``None``), so that state they all need (the clients that authenticated) is kept
    once. The pipeline binds whatever detectors it is given to the state it owns.
    """
    for name in configs:
        REGISTRY.get(name)
    detectors: list[Detector] = []
    if shared is None:
        shared = SharedState()
    for entry in REGISTRY:
        # A default is built only where it is used: RulesConfig's loads the rule files.
        config = configs.get(entry.name)
        if config is None:
            config = cast("DetectorConfigBase", entry.config_model())
        if not isinstance(config, entry.config_model):
            raise TypeError(
                f"detector {entry.name!r} needs a {entry.config_model.__name__}, "
                f"not a {type(config).__name__}"
            )
        if not config.enabled:
            continue
        factory = entry.factory
        if factory.wants_shared:
            detectors.append(cast(_SharingFactory, factory)(config, shared=shared))
        else:
            detectors.append(factory(config))
    return detectors
