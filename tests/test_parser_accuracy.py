"""Parser accuracy on the fail2ban and sshguard labelled samples (see bench/accuracy.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / ".." / "shared" / "corpus"

pytestmark = pytest.mark.skipif(
    not (CORPUS / "fail2ban" / "sshd.log").is_file(),
    reason=f"labelled corpus not found at {CORPUS} (it lives beside the repository)",
)


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_accuracy", ROOT / "bench" / "accuracy.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module
    spec.loader.exec_module(module)
    return module


def test_every_default_mode_match_found_and_no_false_match() -> None:
    """Every in-scope expected match has the right host and no no-match line gives a failure."""
    bench = _bench()
    results = bench.run_all(CORPUS)
    print()
    print(bench.format_table(results))
    problems = [
        f"{r.name}:{c.lineno} {c.outcome} got={c.got} | {c.line}"
        for r in results
        for c in r.problems()
    ]
    assert problems == []
    for r in results:
        assert r.expected > 0, r.name
        assert r.found + r.out_of_scope + r.divergent == r.expected, r.name


def test_out_of_scope_lines_are_few_and_explained() -> None:
    """Out-of-scope and divergent lines all carry a reason and stay a small minority."""
    bench = _bench()
    for r in bench.run_all(CORPUS):
        for c in r.cases:
            if c.outcome in ("out_of_scope", "divergent"):
                assert c.reason, f"{r.name}:{c.lineno}"
        assert r.found >= 0.55 * r.expected, r.name
