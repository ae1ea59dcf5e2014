"""Detector registry and build_detectors."""

from __future__ import annotations

import pytest

from aisentinel.clock import FakeClock
from aisentinel.detectors import (
    REGISTRY,
    ScanningConfig,
    SshBruteforceConfig,
    build_detectors,
    default_configs,
)

NAMES = {
    "ssh_bruteforce",
    "http_auth",
    "credential_stuffing",
    "rate_abuse",
    "scanning",
    "ai_recon",
    "model_exploit",
}


def test_all_detectors_registered_and_built_by_default() -> None:
    """With no config every detector runs with its production defaults."""
    assert set(REGISTRY.names()) == NAMES
    detectors = build_detectors({}, FakeClock())
    assert {d.name for d in detectors} == NAMES
    assert all(d.tracked_keys() == 0 for d in detectors)


def test_disabled_detector_is_not_built() -> None:
    """enabled = false leaves a detector out."""
    detectors = build_detectors({"scanning": ScanningConfig(enabled=False)}, FakeClock())
    assert "scanning" not in {d.name for d in detectors}


def test_unknown_name_and_wrong_model_are_errors() -> None:
    """Unknown tables and mismatched config models are reported clearly."""
    with pytest.raises(KeyError, match="unknown detector 'nope'"):
        build_detectors({"nope": SshBruteforceConfig()}, FakeClock())
    with pytest.raises(TypeError, match="needs a ScanningConfig"):
        build_detectors({"scanning": SshBruteforceConfig()}, FakeClock())


def test_default_configs_round_trip_and_reject_unknown_keys() -> None:
    """Default configs validate from their own dump; unknown keys are errors."""
    for name, config in default_configs().items():
        model = REGISTRY.get(name).config_model
        assert model.model_validate(config.model_dump()) == config
    with pytest.raises(ValueError, match="extra"):
        SshBruteforceConfig.model_validate({"treshold": 3})
