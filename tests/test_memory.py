"""The allocator settings and heap trimmer that keep the daemon's RSS down after a burst."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aisentinel import memory
from aisentinel.cli import main
from aisentinel.memory import (
    ARENA_MAX,
    M_ARENA_MAX,
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MMAP_THRESHOLD_BYTES,
    TRIM_THRESHOLD_BYTES,
    HeapTrimmer,
    tune_malloc,
)


def test_trims_only_when_lines_moved() -> None:
    """malloc_trim runs once per change of the processed-lines total, never when idle."""
    calls: list[int] = []
    trimmer = HeapTrimmer()
    trimmer._fn = lambda pad: calls.append(pad) or 1  # type: ignore[func-returns-value]
    assert trimmer.trim(100) is True
    assert trimmer.trim(100) is False
    assert trimmer.trim(250) is True
    assert calls == [0, 0]
    assert trimmer.trims == 2


def test_without_malloc_trim_it_does_nothing() -> None:
    """On a C library without malloc_trim the trimmer reports unavailable and never trims."""
    trimmer = HeapTrimmer()
    trimmer._fn = None
    assert trimmer.available is False
    assert trimmer.trim(10) is False
    assert trimmer.trims == 0


def test_glibc_trim_runs_for_real() -> None:
    """On this Debian (glibc) the real malloc_trim is found and called."""
    trimmer = HeapTrimmer()
    assert trimmer.available
    garbage = [bytearray(4096) for _ in range(2000)]
    del garbage
    assert trimmer.trim(1) is True


def test_tune_malloc_sets_both_parameters() -> None:
    """Without overrides in the environment, the mmap and trim thresholds and one arena are set."""
    calls: list[tuple[int, int]] = []

    def fake(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    done = tune_malloc({}, fake)
    assert calls == [
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
        (M_ARENA_MAX, ARENA_MAX),
    ]
    assert done == {
        "MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES,
        "MALLOC_TRIM_THRESHOLD_": TRIM_THRESHOLD_BYTES,
        "MALLOC_ARENA_MAX": 1,
    }


def test_tune_malloc_leaves_what_the_environment_sets() -> None:
    """A parameter set by MALLOC_*_ or GLIBC_TUNABLES is the operator's: it is not touched."""
    calls: list[tuple[int, int]] = []

    def fake(param: int, value: int) -> int:
        calls.append((param, value))
        return 1

    env = {"MALLOC_ARENA_MAX": "4", "MALLOC_TRIM_THRESHOLD_": "0"}
    assert tune_malloc(env, fake) == {"MALLOC_MMAP_THRESHOLD_": MMAP_THRESHOLD_BYTES}
    assert calls == [(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)]
    calls.clear()
    env = {
        "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536:glibc.malloc.arena_max=2:"
        "glibc.malloc.trim_threshold=0"
    }
    assert tune_malloc(env, fake) == {}
    assert calls == []


def test_tune_malloc_reports_only_what_mallopt_accepted() -> None:
    """A parameter mallopt refuses (returns 0) is not reported as set."""
    done = tune_malloc({}, lambda param, value: 0 if param == M_ARENA_MAX else 1)
    assert sorted(done) == ["MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"]


def test_tune_malloc_runs_for_real_in_a_child() -> None:
    """On glibc the real mallopt accepts both (checked in a child, not this test process)."""
    code = "from aisentinel.memory import tune_malloc; print(sorted(tune_malloc({})))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "['MALLOC_ARENA_MAX', 'MALLOC_MMAP_THRESHOLD_', 'MALLOC_TRIM_THRESHOLD_']"


def test_run_command_tunes_malloc_before_loading_anything(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`aisentinel run` tunes the allocator first, even when its config then fails."""
    called: list[bool] = []

    def _record() -> dict[str, int]:
        called.append(True)
        return {}

    monkeypatch.setattr(memory, "tune_malloc", _record)
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon\n")
    assert main(["run", "--config", str(bad)]) == 1
    assert called == [True]
