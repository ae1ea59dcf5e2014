"""Demo traffic: realistic nginx and sshd logs with attacks mixed in, plus the ground truth.

:func:`generate` writes a whole scenario at once (benchmarks, tests);
:class:`LiveScenario` appends lines in real time (``make demo``, latency benchmark).
"""

from aisentinel.demo.scenario import (
    ALLOWLIST,
    Attack,
    AttackKind,
    LiveScenario,
    Manifest,
    generate,
)

__all__ = ["ALLOWLIST", "Attack", "AttackKind", "LiveScenario", "Manifest", "generate"]
