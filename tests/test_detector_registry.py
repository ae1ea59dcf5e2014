"""Detector registry and build_detectors."""

from __future__ import annotations

import pytest

from aisentinel.detectors import (
    REGISTRY,
    DetectorConfigBase,
    ScanningConfig,
    SshBruteforceConfig,
    build_detectors,
    default_configs,
)
from aisentinel.detectors.base import Detector
from aisentinel.events import Event, HttpRequest, SshEvent, SshKind

NAMES = {
    "ssh_bruteforce",
    "http_auth",
    "credential_stuffing",
    "rate_abuse",
    "scanning",
    "ai_recon",
    "model_exploit",
    "prompt_injection",
    "prompt_secrets",
    "rules",
    "gpu_workload",
    "gpu_theft",
    "gpu_memory",
    "gpu_spike",
}


def test_all_detectors_registered_and_built_by_default() -> None:
    """With no config every detector runs with its production defaults."""
    assert set(REGISTRY.names()) == NAMES
    detectors = build_detectors({})
    assert {d.name for d in detectors} == NAMES
    assert all(d.tracked_keys() == 0 for d in detectors)


def test_disabled_detector_is_not_built() -> None:
    """enabled = false leaves a detector out."""
    detectors = build_detectors({"scanning": ScanningConfig(enabled=False)})
    assert "scanning" not in {d.name for d in detectors}


def test_unknown_name_and_wrong_model_are_errors() -> None:
    """Unknown tables and mismatched config models are reported clearly."""
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        build_detectors({"nope": SshBruteforceConfig()})
    with pytest.raises(TypeError, match="needs a ScanningConfig"):
        build_detectors({"scanning": SshBruteforceConfig()})


def test_default_configs_round_trip_and_reject_unknown_keys() -> None:
    """Default configs validate from their own dump; unknown keys are errors."""
    for name, config in default_configs().items():
        model = REGISTRY.get(name).config_model
        assert model.model_validate(config.model_dump()) == config
    with pytest.raises(ValueError, match="extra"):
        SshBruteforceConfig.model_validate({"treshold": 3})


def _build(name: str) -> Detector:
    entry = REGISTRY.get(name)
    model = entry.config_model()
    assert isinstance(model, DetectorConfigBase)
    return entry.factory(model)


def test_batch_skips_types_not_consumed() -> None:
    """Every detector ignores events it does not consume in a mixed batch, keeping indices."""
    t0 = 1_764_000_000.0
    mixed: list[Event] = [
        SshEvent(t0 + i, "auth", "192.0.2.7", SshKind.FAILED_PASSWORD, f"u{i}", 22)
        if i % 2
        else HttpRequest(t0 + i, "nginx", "192.0.2.7", "GET", "/.env", 404, 0, None, "x")
        for i in range(40)
    ]
    finding: set[str] = set()
    for entry in REGISTRY:
        one_by_one = _build(entry.name)
        batched = _build(entry.name)
        want = [
            (i, f)
            for i, e in enumerate(mixed)
            if isinstance(e, one_by_one.consumes) and (f := one_by_one.observe(e)) is not None
        ]
        assert batched.observe_many(mixed) == want, entry.name
        finding |= {entry.name} if want else set()
    assert {"ssh_bruteforce", "credential_stuffing", "scanning"} <= finding
