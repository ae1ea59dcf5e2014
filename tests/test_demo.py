"""`aisentinel demo`: the daemon on a live scenario finds every attacker, bans no one benign."""

from __future__ import annotations

import io
import re
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aisentinel.cli import build_parser
from aisentinel.demo.gpu import THIEF, build_fake
from aisentinel.demo.runner import DEMO_MARKER, attack_label, prepare_workdir, run_demo, summarize
from aisentinel.demo.scenario import LiveScenario, generate
from aisentinel.events import Action, AddressTarget, Decision, Finding, Severity


@pytest.mark.slow
def test_demo_detects_all_attackers_and_spares_benign(tmp_path: Path) -> None:
    """A short demo run ends by itself with every attacker detected, no benign address
    banned and no startup warning; its GPU part shows the miner, the GPU-time thief and
    aisentinel_gpu_* series."""
    out = io.StringIO()
    status = run_demo(duration=12.0, seed=3, workdir=tmp_path, rate=60.0, out=out)
    text = out.getvalue()
    assert status == 0, text
    detected = re.search(r"attackers detected: (\d+) of (\d+)", text)
    assert detected is not None, text
    assert detected.group(1) == detected.group(2), text
    assert "benign addresses banned: 0" in text
    assert "allowlisted (192.0.2.192/26)" in text
    assert "log rotation(s) followed" in text
    assert " 0 log rotation(s)" not in text  # the scenario rotates every log half-way
    assert "would BAN" in text
    assert "[?]" not in text  # every ban is of an address the demo attacked from
    assert "log file missing" not in text  # the logs exist before the daemon starts
    assert "/metrics" in text
    # The GPU story: a miner on GPU 1 and GPU-time theft by an unauthenticated client.
    assert "cryptocurrency miner on GPU 1" in text
    assert "(miner name xmrig)" in text
    assert re.search(r"gpu_theft +ban +2001:db8:0:5a::", text), text
    assert "aisentinel_gpu_utilization_ratio{" in text
    assert 'workload="pid:' in text


def test_attack_label_names_the_scenario_kind_and_the_gpu_thief(tmp_path: Path) -> None:
    """The summary's "would ban" label: the scenario's attack kind, the GPU story's thief
    by name (it is not in the manifest), "?" for an address the demo never used."""
    manifest = generate(tmp_path, lines_nginx=2_000, lines_sshd=1_000, seed=3)
    attacker, attack = next(iter(sorted(manifest.attacks.items())))
    assert attack_label(attacker, manifest) == attack.kind.value
    assert THIEF not in manifest.attacks
    assert attack_label(THIEF, manifest) == "gpu_time_theft"
    assert attack_label("192.0.2.99", manifest) == "?"


def test_demo_runs_in_a_relative_workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`aisentinel demo --workdir demo` (a relative path) runs: its config gets absolute paths."""
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert run_demo(duration=2.0, seed=3, workdir=Path("demo"), rate=30.0, out=out) == 0
    assert (tmp_path / "demo" / "state").is_dir()


def _would_be_banned(text: str) -> tuple[int, int]:
    found = re.search(r"attackers that would be banned: (\d+) of (\d+)", text)
    assert found is not None, text
    return int(found.group(1)), int(found.group(2))


@pytest.mark.slow
def test_demo_run_again_in_its_workdir_starts_from_scratch(tmp_path: Path) -> None:
    """A second demo in the same --workdir bans its attackers as the first did: it
    does not restore the first run's bans (every attacker "already banned") nor read
    its logs again."""
    texts = []
    for _run in range(2):
        out = io.StringIO()
        assert run_demo(duration=2.0, seed=3, workdir=tmp_path, rate=30.0, out=out) == 0
        texts.append(out.getvalue())
    first, second = (_would_be_banned(text) for text in texts)
    assert first[0] > 0, texts[0]
    assert second == first, texts[1]
    assert "already banned" not in texts[1]


def test_a_workdir_that_is_not_the_demos_is_left_as_it_is(tmp_path: Path) -> None:
    """A --workdir with files but no demo marker is refused: nothing in it goes or is emptied."""
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "mine.txt").write_text("keep")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "access.log").write_text("keep")
    out = io.StringIO()
    assert prepare_workdir(tmp_path, out) is None
    assert "no .aisentinel-demo" in out.getvalue()
    assert (tmp_path / "state" / "mine.txt").read_text() == "keep"
    assert (tmp_path / "logs" / "access.log").read_text() == "keep"


def test_the_demo_never_empties_or_removes_through_a_symbolic_link(tmp_path: Path) -> None:
    """A demo folder whose logs folder, or one of its logs, links to real logs leaves them whole."""
    victim = tmp_path / "victim"
    victim.mkdir()
    for name in ("access.log", "access.log.1", "auth.log"):
        (victim / name).write_text("real")
    work = tmp_path / "work"
    work.mkdir()
    (work / DEMO_MARKER).touch()
    (work / "logs").symlink_to(victim)
    out = io.StringIO()
    assert prepare_workdir(work, out) is None
    assert "logs is a symbolic link" in out.getvalue()
    (work / "logs").unlink()
    (work / "logs").mkdir()
    (work / "logs" / "auth.log").symlink_to(victim / "auth.log")
    with pytest.raises(OSError, match="symbolic links"):
        prepare_workdir(work, io.StringIO())
    assert sorted(p.name for p in victim.iterdir()) == ["access.log", "access.log.1", "auth.log"]
    assert {p.read_text() for p in victim.iterdir()} == {"real"}


def test_an_empty_or_earlier_demo_folder_is_made_ready(tmp_path: Path) -> None:
    """An empty --workdir gets the marker and empty logs; an earlier demo's state goes."""
    assert prepare_workdir(tmp_path, io.StringIO()) == tmp_path.resolve()
    assert (tmp_path / DEMO_MARKER).is_file()
    (tmp_path / "state").mkdir()
    (tmp_path / "logs" / "auth.log").write_text("old run")
    assert prepare_workdir(tmp_path, io.StringIO()) == tmp_path.resolve()
    assert not (tmp_path / "state").exists()
    assert (tmp_path / "logs" / "auth.log").read_text() == ""


def _decided(who: str, action: Action = Action.BAN, reason: str = "test") -> Decision:
    """A decision of ssh_bruteforce on ``who``, with its finding."""
    finding = Finding(
        ts=0.0,
        detector="ssh_bruteforce",
        severity=Severity.HIGH,
        client=who,
        key=who,
        count=6,
        window=60.0,
        message="6 failed logins",
    )
    return Decision(
        ts=0.0,
        action=action,
        target=AddressTarget.parse(who),
        detector="ssh_bruteforce",
        severity=Severity.HIGH,
        reason=reason,
        ttl=60.0 if action is Action.BAN else None,
        finding=finding,
    )


def test_summary_counts_an_already_banned_attacker_as_banned(tmp_path: Path) -> None:
    """An attacker whose decision is "already banned" counts among those that would be
    banned, not as alert only."""
    manifest = generate(tmp_path, lines_nginx=2_000, lines_sshd=1_000, seed=3)
    attacker = sorted(manifest.should_ban())[0]
    decision = _decided(attacker, Action.NONE, "already banned until 2026-12-07T11:00:00Z")
    daemon: Any = SimpleNamespace(
        pipeline=SimpleNamespace(sources={}, findings={}), sources={}, metrics_port=0
    )
    out = io.StringIO()
    summarize(daemon, [decision], {attacker}, manifest, out)
    assert _would_be_banned(out.getvalue())[0] == 1
    assert f"alert only: {attacker}" not in out.getvalue()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "1e999", "3601", "soon"])
def test_demo_duration_out_of_range_is_an_argument_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo --duration 0` (or negative, nan, inf, over an hour, text) is a usage error."""
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["demo", f"--duration={value}"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument --duration:" in err
    assert "seconds" in err


def test_the_simulated_gpu_label_says_why_the_fake_nvml_was_not_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the C source (the package), without gcc, or with a source gcc refuses,
    build_fake names that cause, not always "no gcc"."""
    missing = tmp_path / "absent.c"
    lib, why = build_fake(tmp_path / "out", missing)
    assert lib is None
    assert why == f"its C source {missing} is not here (only a source checkout has it)"
    broken = tmp_path / "broken.c"
    broken.write_text("int main(void) { return undeclared_x; }\n")
    if shutil.which("gcc") is not None:
        lib, why = build_fake(tmp_path / "out", broken)
        assert lib is None
        assert why.startswith("gcc failed (exit 1): ")
        assert "undeclared_x" in why
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    assert build_fake(tmp_path / "out", broken) == (None, "no gcc")


def _summary(tmp_path: Path, **kw: Any) -> tuple[str, Any]:
    """The summary of a run in which every attacker of the manifest and the GPU thief
    were flagged and banned, except those left out of ``kw["flagged"]``."""
    manifest = generate(tmp_path, lines_nginx=2_000, lines_sshd=1_000, seed=3)
    flagged: set[str] = kw.pop("flagged", {*manifest.attacks, THIEF})
    decisions = [_decided(who) for who in sorted(flagged & (manifest.should_ban() | {THIEF}))]
    daemon: Any = SimpleNamespace(
        pipeline=SimpleNamespace(sources={}, findings={}), sources={}, metrics_port=0
    )
    out = io.StringIO()
    summarize(daemon, decisions, flagged, manifest, out, others={THIEF: "gpu_time_theft"}, **kw)
    return out.getvalue(), manifest


def test_the_ban_tally_counts_the_gpu_thief_it_lists(tmp_path: Path) -> None:
    """The GPU thief, listed under "would ban", is counted among the attackers detected
    and those that would be banned (8 of 8, not 7 of 7 beside 8 bans)."""
    text, manifest = _summary(tmp_path)
    bans = len(manifest.should_ban()) + 1
    assert text.count("[gpu_time_theft]") == 1
    assert _would_be_banned(text) == (bans, bans)
    assert f"attackers detected: {len(manifest.attacks) + 1} of {len(manifest.attacks) + 1}\n" in (
        text
    )


def test_an_interrupted_summary_leaves_out_the_attacks_not_played(tmp_path: Path) -> None:
    """After Ctrl-C only the attacks played (or detected anyway) are counted: the rest
    are one "(interrupted: N attacks not played)" note, never "not detected" lines."""
    manifest = generate(tmp_path / "m", lines_nginx=2_000, lines_sshd=1_000, seed=3)
    first, second, *rest = sorted(manifest.should_ban())
    text, _ = _summary(tmp_path, flagged={first}, played=frozenset({first, second}))
    unplayed = len(manifest.attacks) + 1 - 2
    assert f"attackers detected: 1 of 2 (interrupted: {unplayed} attacks not played)" in text
    assert text.count("not detected:") == 1
    assert f"not detected: {second} (" in text
    assert not any(f"not detected: {who}" in text for who in rest)
    assert _would_be_banned(text) == (1, 2)


def test_an_interrupted_demo_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C during the demo (KeyboardInterrupt while it waits for the scenario) still
    prints the summary, noting the attacks not played, and returns 130."""

    def interrupt(self: LiveScenario, timeout: float | None = None) -> bool:
        time.sleep(0.5)
        raise KeyboardInterrupt

    monkeypatch.setattr(LiveScenario, "join", interrupt)
    out = io.StringIO()
    assert run_demo(duration=30.0, seed=3, workdir=tmp_path, rate=30.0, out=out) == 130
    text = out.getvalue()
    assert "interrupted: stopping" in text
    assert re.search(
        r"attackers detected: \d+ of \d+ \(interrupted: \d+ attacks not played\)", text
    )
