"""The heap trimmer that hands freed pages back after a burst."""

from __future__ import annotations

from aisentinel.memory import HeapTrimmer


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
