"""The mypyc-compiled build: which modules it compiles, and that the one under test is known.

`make test` runs the suite twice: on the checkout (pure Python) and with
``PYTHONPATH=build/mypyc AISENTINEL_EXPECT_COMPILED=1`` (`make pytest-compiled`). These
tests make the second run fail if it silently ran the pure modules, and the first if it
picked up compiled ones.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PACKAGE_PATH

from aisentinel import compiled

REPO = Path(__file__).resolve().parents[1]
EXPECT_COMPILED = os.environ.get("AISENTINEL_EXPECT_COMPILED") == "1"


def _load_build_script() -> object:
    spec = importlib.util.spec_from_file_location(
        "build_mypyc", REPO / "packaging" / "build_mypyc.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hot_modules_are_compiled_exactly_when_expected() -> None:
    """Every hot module is an extension in the compiled run, none in the pure run."""
    expected = list(compiled.HOT_MODULES) if EXPECT_COMPILED else []
    assert compiled.compiled_modules() == expected
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    for name in compiled.HOT_MODULES:
        origin = importlib.import_module(name).__file__
        assert origin is not None
        assert origin.endswith(suffixes) == EXPECT_COMPILED, origin


def test_version_says_whether_it_runs_compiled() -> None:
    """`aisentinel --version` names the build a subprocess of the suite runs."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PATH, PYTHONSAFEPATH="1")
    done = subprocess.run(
        [sys.executable, "-m", "aisentinel", "--version"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    n = len(compiled.HOT_MODULES)
    wanted = f"(compiled: yes ({n} modules))" if EXPECT_COMPILED else "(compiled: no)"
    assert done.stdout.strip().endswith(wanted), done.stdout


def test_build_script_compiles_the_runtime_list() -> None:
    """packaging/build_mypyc.py reads HOT_MODULES from the source, without importing it."""
    script = _load_build_script()
    assert script.hot_modules() == list(compiled.HOT_MODULES)  # type: ignore[attr-defined]
    for name in compiled.HOT_MODULES:
        assert (REPO / Path(*name.split("."))).with_suffix(".py").is_file(), name


def test_describe_tells_a_partial_build_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A build where only some hot modules load compiled says so, with both counts."""
    names = ("aisentinel.a", "aisentinel.b", "aisentinel.c")
    monkeypatch.setattr(compiled, "HOT_MODULES", names)
    monkeypatch.setattr(compiled, "compiled_modules", lambda: ["aisentinel.b"])
    assert compiled.describe() == "compiled: partly (1 of 3 modules)"
    monkeypatch.setattr(compiled, "compiled_modules", lambda: list(names))
    assert compiled.describe() == "compiled: yes (3 modules)"
    monkeypatch.setattr(compiled, "compiled_modules", list)
    assert compiled.describe() == "compiled: no"
