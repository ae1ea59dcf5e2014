"""The benchmarks' options and measures: ``--only`` keeps just the named detectors; a
brute force decided early is timed from the lines that decided it."""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType

import pytest

from aisentinel.config import load_config
from aisentinel.detectors import REGISTRY
from aisentinel.sources.journald import journald_available

ROOT = Path(__file__).resolve().parents[1]
needs_journal_remote = pytest.mark.skipif(
    not Path("/lib/systemd/systemd-journal-remote").exists(),
    reason="needs systemd-journal-remote",
)


@pytest.fixture
def rss(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("rss")


@pytest.fixture
def latency(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("latency")


@pytest.fixture
def gen(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    return importlib.import_module("gen")


def test_detectors_off_without_keep_disables_all(gen: ModuleType, tmp_path: Path) -> None:
    """The parse-only config (throughput.py's breakdown) leaves no detector on."""
    cfg = tmp_path / "off.toml"
    cfg.write_text(gen.detectors_off(), encoding="utf-8")
    loaded = load_config(cfg)
    assert not [name for name in REGISTRY.names() if loaded.detectors[name].enabled]


def test_only_detectors_needs_known_names(gen: ModuleType) -> None:
    """Names are trimmed; an unknown or empty list is a ValueError naming the known ones."""
    assert gen.only_detectors(" rules ,http_auth,") == ["rules", "http_auth"]
    with pytest.raises(ValueError, match=r"unknown detector\(s\) nope; known: .*rules"):
        gen.only_detectors("rules,nope")
    with pytest.raises(ValueError, match="none named"):
        gen.only_detectors(" , ")


def test_only_keeps_the_named_detectors(rss: ModuleType, tmp_path: Path) -> None:
    """--only ssh_bruteforce,scanning gives a config with those two enabled, no other."""
    args = rss.parse_args(["--only", "ssh_bruteforce, scanning", "--no-fail2ban"])
    cfg = tmp_path / "aisentinel.toml"
    cfg.write_text(rss.only_config(args), encoding="utf-8")
    loaded = load_config(cfg)
    enabled = {name for name in REGISTRY.names() if loaded.detectors[name].enabled}
    assert enabled == {"ssh_bruteforce", "scanning"}


def test_bench_daemon_keeps_its_state_and_socket_in_its_work_dir(
    latency: ModuleType, tmp_path: Path
) -> None:
    """The benchmarks' daemon config puts its state and control socket under the work
    directory, never the installed daemon's /run/aisentinel socket."""
    cfg = tmp_path / "aisentinel.toml"
    log = tmp_path / "auth.log"
    cfg.write_text(latency.config_text(tmp_path, {"sshd": ("sshd", log)}), encoding="utf-8")
    loaded = load_config(cfg)
    assert loaded.daemon.control_socket == tmp_path / "control.sock"
    assert loaded.daemon.state_dir == tmp_path / "state"
    assert [s.name for s in loaded.sources] == ["sshd"]


def test_without_only_every_detector_stays_on(rss: ModuleType) -> None:
    """Without --only the benchmark adds nothing to the default config."""
    assert rss.only_config(rss.parse_args([])) == ""


def test_only_refuses_an_unknown_detector(
    rss: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown name is refused with the known ones listed."""
    with pytest.raises(SystemExit):
        rss.parse_args(["--only", "ssh_bruteforce,sshd"])
    err = capsys.readouterr().err
    assert "unknown detector(s) sshd" in err
    assert "ssh_bruteforce" in err


def test_a_decision_before_the_fifth_failure_is_timed_from_the_first_four(
    latency: ModuleType,
) -> None:
    """A decision seen before the 5th failure was written is counted early and timed from
    the flush of the first four, never negative; one after it from the 5th's flush."""
    assert latency.decision_latency(10.0031, first=10.0, fifth=10.002) == pytest.approx(
        (1.1, False)
    )
    ms, early = latency.decision_latency(10.0019, first=10.0, fifth=10.002)
    assert early
    assert ms == pytest.approx(1.9)


@needs_journal_remote
def test_journal_rss_writes_what_the_source_reads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """journal_rss.py's journal holds each profile line as an sshd entry, plus another
    program's entry after every third, and the daemon's config reads it from the start."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    journal_rss = importlib.import_module("journal_rss")
    lines = [(4000 + i, f"Invalid user u{i} from 198.51.100.{i} port 2222") for i in range(1, 8)]
    jdir = tmp_path / "journal"
    assert journal_rss.write_journal(jdir, lines) == 7
    cfg = tmp_path / "a.toml"
    cfg.write_text(journal_rss.source_config(jdir), encoding="utf-8")
    source = load_config(cfg).sources[0]
    assert (source.type, source.directory, source.start_at) == ("journald", str(jdir), "beginning")
    if not journald_available():
        return
    from systemd import journal

    reader = journal.Reader(path=str(jdir))
    entries = list(reader)
    reader.close()
    sshd = [e for e in entries if e["SYSLOG_IDENTIFIER"] == "sshd"]
    assert [(e["_PID"], e["MESSAGE"]) for e in sshd] == lines
    assert all(e["_SYSTEMD_UNIT"] == "sshd.service" for e in sshd)  # fail2ban's journalmatch
    assert len(entries) - len(sshd) == 2


@needs_journal_remote
def test_journal_latency_writer_streams_entries_the_source_turns_into_events(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """journal_latency.py's writer streams sshd entries (stamped now) and other programs'
    entries into a journal; the journald source makes an sshd event of each sshd one."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    journal_latency = importlib.import_module("journal_latency")
    writer = journal_latency.Writer(tmp_path / "journal")
    try:
        writer.write(journal_latency.other_entry(1))
        for i in range(1, 4):
            writer.write(
                journal_latency.sshd_entry(
                    4000 + i, f"Failed password for root from 198.51.100.{i} port 2222 ssh2"
                )
            )
    finally:
        writer.close()
    assert writer.proc.returncode == 0
    cfg = tmp_path / "a.toml"
    cfg.write_text(journal_latency.source_config(tmp_path / "journal"), encoding="utf-8")
    source = load_config(cfg).sources[0]
    assert (source.type, source.start_at) == ("journald", "end")
    if not journald_available():
        return
    from systemd import journal

    from aisentinel.sources.journald import entry_event

    reader = journal.Reader(path=str(tmp_path / "journal"))
    entries = list(reader)
    reader.close()
    # The source reads __REALTIME_TIMESTAMP as microseconds; this reader gives a datetime.
    raw = [{**e, "__REALTIME_TIMESTAMP": int(e["__REALTIME_TIMESTAMP"].timestamp() * 1e6)}
           for e in entries]  # fmt: skip
    events = [entry_event(e, "journal") for e in raw]
    assert events[0] is None  # the other program's entry
    sshd = [e for e in events if e is not None]
    assert [e.client for e in sshd] == [f"198.51.100.{i}" for i in (1, 2, 3)]
    assert all(abs(e.ts - time.time()) < 60 for e in sshd)
