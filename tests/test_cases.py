"""Test cases as data: every folder of tests/cases replayed through ``aisentinel replay``.

The format of a case and the matching rules are in tests/cases/README.md. Adding a
case is adding a folder; nothing here names one.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import PACKAGE_PATH

from aisentinel.config import load_config
from aisentinel.detectors import REGISTRY as DETECTORS
from aisentinel.events import GpuSample
from aisentinel.parsers import REGISTRY as PARSERS
from aisentinel.replay import detect_format, read_lines, replay

CASES_DIR = Path(__file__).parent / "cases"
CASES = sorted(p for p in CASES_DIR.iterdir() if p.is_dir())
OWN_FILES = frozenset({"config.toml", "case.toml", "expected.jsonl", "expected-summary.json"})
CASE_KEYS = frozenset({"files", "format"})
KINDS = ("finding", "decision")
MISSING = "<missing>"
SHOWN = {
    "finding": ("kind", "time", "detector", "severity", "client", "key", "count", "action"),
    "decision": ("kind", "time", "action", "target", "detector", "reason"),
}
"""Fields shown for a record that no expected record matches (an extra one)."""


@dataclass(frozen=True)
class Case:
    """One folder of tests/cases, read and checked."""

    path: Path
    files: tuple[str, ...]
    format: str
    expected: tuple[dict[str, Any], ...]
    summary: dict[str, Any] | None


def load_case(path: Path) -> Case:
    """The case in ``path``; ``ValueError`` says what is wrong with the folder."""
    if not (path / "config.toml").is_file():
        raise ValueError(f"{path.name}: no config.toml")
    if not (path / "expected.jsonl").is_file():
        raise ValueError(f"{path.name}: no expected.jsonl")
    meta: dict[str, Any] = {}
    if (path / "case.toml").is_file():
        meta = tomllib.loads((path / "case.toml").read_text(encoding="utf-8"))
        unknown = set(meta) - CASE_KEYS
        if unknown:
            raise ValueError(f"{path.name}/case.toml: unknown keys {sorted(unknown)}")
    names = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES and p.name[0] != ".")
    files = tuple(meta.get("files") or names)
    if not files:
        raise ValueError(f"{path.name}: no input log file")
    for name in files:
        if not (path / name).is_file():
            raise ValueError(f"{path.name}/case.toml: no input file {name!r}")
    fmt = meta.get("format", "auto")
    if fmt != "auto" and fmt not in PARSERS.names():
        raise ValueError(f"{path.name}/case.toml: unknown format {fmt!r}")
    expected: list[dict[str, Any]] = []
    text = (path / "expected.jsonl").read_text(encoding="utf-8")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        record = json.loads(line)
        if not isinstance(record, dict) or record.get("kind") not in KINDS:
            raise ValueError(f"{path.name}/expected.jsonl:{number}: needs a kind of {KINDS}")
        expected.append(record)
    summary = None
    if (path / "expected-summary.json").is_file():
        summary = json.loads((path / "expected-summary.json").read_text(encoding="utf-8"))
    return Case(path, files, fmt, tuple(expected), summary)


def run_cli(case: Case) -> list[dict[str, Any]]:
    """The JSON records of ``aisentinel replay`` over the case, run in its folder."""
    # nginx-error and classic syslog times are local; the package under test, not one
    # installed elsewhere (the subprocess runs in the case's folder)
    env = {**os.environ, "TZ": "UTC", "PYTHONPATH": PACKAGE_PATH}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "aisentinel",
            "replay",
            *case.files,
            "--format",
            case.format,
            "--json",
            "--config",
            "config.toml",
        ],
        cwd=case.path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def _view(record: dict[str, Any], keys: Any) -> dict[str, Any]:
    return {key: record.get(key, MISSING) for key in keys}


def compare(records: list[dict[str, Any]], expected: tuple[dict[str, Any], ...]) -> None:
    """Per kind, the records equal the expected ones on the fields each expected one names."""
    for kind in KINDS:
        want = [e for e in expected if e["kind"] == kind]
        got = [r for r in records if r.get("kind") == kind]
        seen = [_view(r, w) for r, w in zip(got, want, strict=False)]
        seen += [_view(r, SHOWN[kind]) for r in got[len(want) :]]
        assert seen == want, f"{kind}s differ"


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_case(path: Path) -> None:
    """Replaying the case's logs gives exactly the expected findings and decisions, and no
    stage failed on any event (containment would otherwise hide a broken detector)."""
    case = load_case(path)
    records = run_cli(case)
    compare(records, case.expected)
    summary = next(r for r in records if r.get("kind") == "summary")
    assert summary.get("event_errors") == {}, summary.get("event_errors")
    if case.summary is not None:
        assert _view(summary, case.summary) == case.summary


def _records(jobs: list[tuple[Path, str]], path: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    replay(jobs, load_config(path / "config.toml"), out, as_json=True)
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    return [
        {k: v for k, v in r.items() if k != "source"} for r in records if r.get("kind") in KINDS
    ]


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_case_line_by_line(path: Path, tmp_path: Path) -> None:
    """The case's lines replayed one per batch give the records of whole-file batches."""
    case = load_case(path)
    whole = [
        (path / name, detect_format(path / name) if case.format == "auto" else case.format)
        for name in case.files
    ]
    if any(fmt == "container" for _file, fmt in whole):
        pytest.skip(
            "a container log's lines are records of its streams: a new parser drops the "
            "first line of each stream (it may be the rest of one begun before)"
        )
    single: list[tuple[Path, str]] = []
    for file, fmt in whole:
        for batch in read_lines(file):
            for line in batch:
                piece = tmp_path / f"{len(single):06d}.log"
                piece.write_text(line + "\n", encoding="utf-8")
                single.append((piece, fmt))
    assert _records(single, path) == _records(whole, path)


def test_every_detector_and_parser_has_a_case() -> None:
    """Each registered detector is expected in some case's findings and each parser reads
    some case's input (a new plug-in needs a case). Detectors of GPU samples are left
    out: the case format replays log files, and GPU samples come from a live sampler
    (tests/test_detector_gpu_*.py cover them)."""
    detectors: set[str] = set()
    formats: set[str] = set()
    for path in CASES:
        case = load_case(path)
        detectors |= {e["detector"] for e in case.expected if e["kind"] == "finding"}
        for name in case.files:
            formats.add(detect_format(path / name) if case.format == "auto" else case.format)
    gpu = {e.name for e in DETECTORS if GpuSample in e.factory.consumes}
    assert gpu == {"gpu_workload", "gpu_theft", "gpu_memory", "gpu_spike"}
    assert set(DETECTORS.names()) - gpu <= detectors
    assert set(PARSERS.names()) <= formats


def test_case_folder_rules(tmp_path: Path) -> None:
    """A folder without expectations, with an unknown case.toml key or a bad expected
    kind is refused, so that a typo cannot turn a case into one that checks nothing."""
    (tmp_path / "config.toml").write_text("")
    (tmp_path / "auth.log").write_text("x\n")
    with pytest.raises(ValueError, match=r"no expected\.jsonl"):
        load_case(tmp_path)
    (tmp_path / "expected.jsonl").write_text('# comment\n\n{"kind": "finding"}\n')
    assert load_case(tmp_path).files == ("auth.log",)
    (tmp_path / "case.toml").write_text('fromat = "sshd"\n')
    with pytest.raises(ValueError, match="unknown keys"):
        load_case(tmp_path)
    (tmp_path / "case.toml").write_text('format = "sshd"\n')
    (tmp_path / "expected.jsonl").write_text('{"kind": "findings"}\n')
    with pytest.raises(ValueError, match="needs a kind"):
        load_case(tmp_path)


def test_compare_is_exact_per_kind() -> None:
    """An extra or missing finding fails the comparison; unnamed fields are not compared."""
    finding = {"kind": "finding", "detector": "scanning", "client": "192.0.2.1", "count": 3}
    decision = {"kind": "decision", "action": "ban", "target": "192.0.2.1"}
    compare([finding, decision], ({"kind": "finding", "client": "192.0.2.1"}, decision))
    with pytest.raises(AssertionError):
        compare([finding, decision, finding, decision], ({"kind": "finding"}, decision))
    with pytest.raises(AssertionError):
        compare([decision], ({"kind": "finding"}, decision))
    with pytest.raises(AssertionError):
        compare([finding], ({"kind": "finding", "count": 4},))


def test_cases_exist() -> None:
    """The case folder is not empty (a glob typo would silently test nothing)."""
    assert len(CASES) >= 10
