"""Handing freed heap pages back to the kernel after a burst of log lines.

A flood of lines is parsed into short-lived objects; when the batch is done they
are freed, but glibc keeps the freed memory inside its heaps, so it stays resident
(and counted in RSS) although nothing uses it. ``malloc_trim(0)`` gives every
whole free page inside glibc's heaps back to the kernel (``madvise``): after a
100,000-client burst it takes the daemon from about 97 to 85 MB in about 0.5 ms.

The daemon calls :meth:`HeapTrimmer.trim` from its housekeeping tick, only when
lines were processed since the last call. Where the C library has no
``malloc_trim`` (not glibc), it does nothing.

:func:`tune_malloc`, called by ``aisentinel run`` before anything else, sets three glibc
allocator parameters for the daemon's lifetime (each unless the environment already
sets it, ``MALLOC_*_`` or ``GLIBC_TUNABLES``):

* ``M_MMAP_THRESHOLD`` fixed at 128 KiB. By default glibc raises this threshold each
  time a large block is freed (up to 32 MiB), so after the first few the large blocks
  of a burst (read chunks, the tables of growing dicts and arrays) come from the heap,
  where they fragment it and stay resident after they are freed. Fixed, every block of
  128 KiB or more is its own mapping and goes back to the kernel when freed.
* ``M_TRIM_THRESHOLD`` 2 MiB. Fixing the mmap threshold also stops glibc from raising
  this one from its 128 KiB default, and then the heap's top is given back and taken
  again many times a second under load (``brk``: 96 → 1,705 calls in a replay of the
  storm access.log). Up to 2 MiB stays; the housekeeping trim above gives the rest back.
* ``M_ARENA_MAX`` 1: every thread (one reader per source, the metrics server, the
  audit scheduler) allocates from the main heap instead of an arena of its own (by
  default up to 8 per core), so a block a reader thread frees can be reused by the
  pipeline. The GIL already serialises the threads' work.

With 100,000 distinct clients (``bench/rss.py``) they take the daemon's peak RSS
(VmHWM) from about 101 MB to about 94 MB. The cost is page faults: every large block
is fresh memory from the kernel (a storm access.log replay: 19,000 → 42,000 minor
faults, 0.1 s → 0.2 s of system time in 4.7 s).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Mapping

M_TRIM_THRESHOLD = -1
"""mallopt(3) parameter numbers (glibc's malloc.h)."""
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 128 * 1024
TRIM_THRESHOLD_BYTES = 2 * 1024 * 1024
ARENA_MAX = 1
_PARAMETERS = (
    # (mallopt parameter, value, environment variable, GLIBC_TUNABLES name)
    (
        M_MMAP_THRESHOLD,
        MMAP_THRESHOLD_BYTES,
        "MALLOC_MMAP_THRESHOLD_",
        "glibc.malloc.mmap_threshold",
    ),
    (
        M_TRIM_THRESHOLD,
        TRIM_THRESHOLD_BYTES,
        "MALLOC_TRIM_THRESHOLD_",
        "glibc.malloc.trim_threshold",
    ),
    (M_ARENA_MAX, ARENA_MAX, "MALLOC_ARENA_MAX", "glibc.malloc.arena_max"),
)


def _libc(name: str) -> Callable[..., int] | None:
    """The loaded C library's function ``name``, or ``None`` where it has none."""
    try:
        fn: Callable[..., int] = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    return fn


class HeapTrimmer:
    """Calls ``malloc_trim(0)`` when there is something to give back (see module doc)."""

    __slots__ = ("_fn", "_seen", "trims")

    def __init__(self) -> None:
        self._fn: Callable[[int], int] | None = _libc("malloc_trim")
        self._seen = -1
        self.trims = 0
        """How many times memory was trimmed."""

    @property
    def available(self) -> bool:
        """Whether the C library has ``malloc_trim``."""
        return self._fn is not None

    def trim(self, lines_processed: int) -> bool:
        """Trim if ``lines_processed`` (a running total) moved since the last call."""
        if self._fn is None or lines_processed == self._seen:
            return False
        self._seen = lines_processed
        self._fn(0)
        self.trims += 1
        return True


def tune_malloc(
    environ: Mapping[str, str] | None = None,
    mallopt: Callable[[int, int], int] | None = None,
) -> dict[str, int]:
    """Set the daemon's allocator parameters (see the module doc); what was set, by
    environment variable name. A parameter the environment sets is left to it; on a C
    library without ``mallopt`` nothing is set."""
    env = os.environ if environ is None else environ
    fn = _libc("mallopt") if mallopt is None else mallopt
    if fn is None:
        return {}
    tunables = env.get("GLIBC_TUNABLES", "")
    done: dict[str, int] = {}
    for param, value, variable, tunable in _PARAMETERS:
        if variable in env or tunable in tunables:
            continue
        if fn(param, value) == 1:  # mallopt returns 1 on success, 0 on error
            done[variable] = value
    return done
