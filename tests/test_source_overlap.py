"""Two sources reading the same file or journal: a check-config warning, not a silent
double count."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from aisentinel.cli import main
from aisentinel.config import parse_config
from aisentinel.sources.journald import JournaldSourceConfig
from aisentinel.sources.overlap import _journal_overlap, shared_inputs


def _file(name: str, *paths: str | Path, parser: str = "sshd") -> dict[str, Any]:
    return {"name": name, "type": "file", "parser": parser, "paths": [str(p) for p in paths]}


def _warnings(*sources: dict[str, Any]) -> list[str]:
    return shared_inputs(parse_config({"sources": list(sources)}).sources)


@pytest.mark.parametrize(
    "second",
    ["{d}/auth.log", "{d}//auth.log", "{d}/sub/../auth.log", "{d}/*.log", "{d}/link.log"],
    ids=["same-literal", "double-slash", "dot-dot", "glob", "symlink"],
)
def test_two_file_sources_on_one_file_are_warned_about(tmp_path: Path, second: str) -> None:
    """Two sources on one file (literal, alias, glob, symlink): a warning naming both."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "auth.log").write_text("")
    (tmp_path / "link.log").symlink_to(tmp_path / "auth.log")
    found = _warnings(
        _file("auth", tmp_path / "auth.log"),
        _file("again", second.format(d=tmp_path), parser="auto"),
    )
    assert len(found) == 1, found
    assert found[0].startswith(f"sources 'auth' and 'again' both read {tmp_path}/")
    assert "counted twice" in found[0]


def test_a_literal_matching_another_sources_glob_is_warned_about_before_it_exists(
    tmp_path: Path,
) -> None:
    """A literal path that another source's glob matches is a warning even while missing."""
    found = _warnings(_file("a", tmp_path / "x" / "*.log"), _file("b", tmp_path / "x" / "s.log"))
    assert len(found) == 1
    assert found[0].startswith(f"sources 'a' and 'b' both read {tmp_path}/x/s.log (as ")


def test_two_globs_matching_one_existing_file_are_warned_about(tmp_path: Path) -> None:
    """Two different globs that both match a file that exists now are a warning."""
    (tmp_path / "auth.log").write_text("")
    found = _warnings(_file("a", tmp_path / "*.log"), _file("b", tmp_path / "auth.*"))
    assert len(found) == 1
    assert f"both read {tmp_path}/auth.log" in found[0]


def test_sources_on_different_files_are_not_warned_about(tmp_path: Path) -> None:
    """Distinct files, and the default sources, give no warning."""
    (tmp_path / "a.log").write_text("")
    (tmp_path / "b.log").write_text("")
    assert _warnings(_file("a", tmp_path / "a.log"), _file("b", tmp_path / "b.log")) == []
    assert _warnings(_file("a", tmp_path / "a.log"), _file("b", tmp_path / "*.txt")) == []
    assert shared_inputs(parse_config({}).sources) == []


def test_two_journald_sources_are_warned_about() -> None:
    """Two journald sources read the same journal: a warning naming both."""
    found = _warnings(
        {"name": "j1", "type": "journald"},
        {"name": "j2", "type": "journald", "kernel_xid": True},
    )
    assert len(found) == 1
    assert found[0].startswith("journald sources 'j1' and 'j2' both read the journal")
    assert "(the system journal) for sshd's entries:" in found[0]


def test_journald_sources_that_share_no_counted_entry_are_not_warned_about() -> None:
    """An sshd source beside a kernel Xid one, or two sshd sources of different journal
    directories, count no entry twice: no warning; two Xid sources of one journal do."""
    sshd = {"name": "ssh", "type": "journald"}
    xid = {"name": "xid", "type": "journald", "matches": ["_TRANSPORT=kernel"], "kernel_xid": True}
    assert _warnings(sshd, xid) == []
    assert _warnings(sshd, {**sshd, "name": "remote", "directory": "/var/log/journal/remote"}) == []
    found = _warnings(xid, {**xid, "name": "xid2"})
    assert len(found) == 1
    assert "for the kernel's Xid lines:" in found[0]
    same_dir = {"directory": "/var/log/journal/remote"}
    found = _warnings({**sshd, **same_dir}, {**sshd, "name": "again", **same_dir})
    assert len(found) == 1
    assert "(/var/log/journal/remote) for sshd's entries" in found[0]


MACHINE = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (None, "/var/log/journal"),
        (None, "/run/log/journal/"),
        (None, f"/var/log/journal/{MACHINE}"),
        ("/var/log/journal", f"/var/log/journal/{MACHINE}"),
        ("/srv/j", "/srv/j/../j/fedcba9876543210fedcba9876543210"),
    ],
)
def test_one_journal_named_two_ways_is_warned_about(first: str | None, second: str) -> None:
    """The system journal and a directory it lives in (or this machine's subdirectory),
    or a directory and its machine-id subdirectory, are one journal: a warning naming
    both ways."""
    a = parse_config(
        {"sources": [{"name": "a", "type": "journald", **({"directory": first} if first else {})}]}
    ).sources[0]
    b = parse_config({"sources": [{"name": "b", "type": "journald", "directory": second}]})
    assert isinstance(a, JournaldSourceConfig)
    [b_source] = b.sources
    assert isinstance(b_source, JournaldSourceConfig)
    found = _journal_overlap(a, b_source, MACHINE)
    assert found is not None
    assert found.startswith("journald sources 'a' and 'b' both read the journal (")
    assert f" and {os.path.normpath(second)}) for sshd's entries" in found


def test_other_machines_journals_are_not_the_system_journal() -> None:
    """Another machine id's subdirectory, or journal-remote's directory, beside the system
    journal: not one journal, no warning."""
    system = {"name": "a", "type": "journald"}
    for other in ("/var/log/journal/remote", "/var/log/journal/fedcba9876543210fedcba9876543210"):
        sources = parse_config(
            {"sources": [system, {"name": "b", "type": "journald", "directory": other}]}
        ).sources
        a, b = sources
        assert isinstance(a, JournaldSourceConfig)
        assert isinstance(b, JournaldSourceConfig)
        assert _journal_overlap(a, b, MACHINE) is None, other


def test_journald_sshd_and_the_syslog_auth_log_are_warned_about() -> None:
    """sshd from journald beside /var/log/auth.log or an sshd-parsed file is a warning."""
    found = _warnings(
        {"name": "sshd-journal", "type": "journald"},
        _file("auth", "/var/log/auth.log", parser="auto"),
    )
    assert len(found) == 1
    assert "'sshd-journal' (journald) and 'auth' (/var/log/auth.log)" in found[0]
    found = _warnings(
        {"name": "sshd-journal", "type": "journald"}, _file("auth", "/srv/logs/sshd.log")
    )
    assert len(found) == 1
    other = {"name": "app", "type": "journald", "matches": ["_SYSTEMD_UNIT=app.service"]}
    assert _warnings(other, _file("auth", "/var/log/auth.log")) == []


def test_check_config_prints_the_overlap_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config exits 0 and prints the shared file as a WARNING on stderr."""
    log = tmp_path / "auth.log"
    path = tmp_path / "c.toml"
    path.write_text(
        f'[[sources]]\nname = "auth"\ntype = "file"\nparser = "sshd"\npaths = ["{log}"]\n'
        f'[[sources]]\nname = "again"\ntype = "file"\nparser = "auto"\n'
        f'paths = ["{tmp_path}/*.log"]\n'
    )
    assert main(["check-config", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"WARNING: sources 'auth' and 'again' both read {log} (as {log} and " in err
