"""`check-config` judges whether the service's account can read what the config names.

The permission checks use synthetic accounts (uids and groups no one has), so they run
as any user: only the file's mode bits, owner and ACL are real.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aisentinel import access
from aisentinel.access import Account, service_account, unit_files, unreadable
from aisentinel.cli import main

ME = os.getuid()
MY_GID = os.getgid()
STRANGER = Account("stranger", ME + 54321, frozenset({MY_GID + 54321}))
IN_MY_GROUP = Account("colleague", ME + 54322, frozenset({MY_GID}))
RULE = (
    '[[rules]]\nid = "local-x"\ndescription = "x"\nthreshold = 1\nwindow = "10m"\n'
    'match.path.prefix = ["/old-admin/"]\n'
)


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A 0755 directory in the temporary directory (pytest's own tree is 0700: other
    accounts could search none of it)."""
    path = Path(tempfile.mkdtemp(prefix="aisentinel-access-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _file(directory: Path, mode: int, name: str = "f.toml") -> Path:
    path = directory / name
    path.write_text("x")
    path.chmod(mode)
    return path


def _acl(path: Path, entries: list[tuple[int, int, int]]) -> None:
    """Set a POSIX access ACL (tag, permission bits, id) on ``path``; skip without support."""
    raw = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)
    try:
        os.setxattr(path, access.ACL_XATTR, raw)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            pytest.skip("no POSIX ACLs on this file system")
        raise


NONE = 0xFFFFFFFF  # the id of an entry that names no one


def test_mode_bits_judge_another_account_by_owner_group_then_others(open_dir: Path) -> None:
    """0600 refuses another account (the reason names mode and owner), 0640 admits one
    in the file's group only, 0644 admits anyone; the owner's own bits win over others'."""
    path = _file(open_dir, 0o600)
    why = unreadable(path, STRANGER)
    assert why is not None
    assert why.startswith("no read permission (mode -rw------- ")
    path.chmod(0o640)
    assert unreadable(path, STRANGER) is not None
    assert unreadable(path, IN_MY_GROUP) is None
    path.chmod(0o644)
    assert unreadable(path, STRANGER) is None
    path.chmod(0o044)  # owner: no read, although group and others may
    owner = Account("me", ME, frozenset({MY_GID}))
    assert unreadable(path, owner) is not None


def test_a_directory_on_the_way_without_search_permission_refuses(open_dir: Path) -> None:
    """A readable file in a 0700 directory is unreadable to another account: the reason
    names the directory; a directory to be listed needs read and search permission."""
    inner = open_dir / "private"
    inner.mkdir()
    path = _file(inner, 0o644)
    inner.chmod(0o700)
    assert unreadable(path, STRANGER) == (
        f"no search permission on {inner} (mode drwx------ {_owner(inner)})"
    )
    inner.chmod(0o711)
    assert unreadable(path, STRANGER) is None
    assert unreadable(inner, STRANGER, directory=True) is not None  # search, but no list
    inner.chmod(0o755)
    assert unreadable(inner, STRANGER, directory=True) is None
    assert unreadable(open_dir / "missing", STRANGER) is None  # reading it says why


def test_an_access_acl_grants_and_its_mask_limits(open_dir: Path) -> None:
    """A named-user ACL entry lets another account read a file its mode bits refuse; the
    mask (the group bits) still limits it; a named group counts like the file's group."""
    path = _file(open_dir, 0o600)
    _acl(path, [(0x01, 6, NONE), (0x02, 4, STRANGER.uid), (0x04, 0, NONE), (0x10, 4, NONE),
                (0x20, 0, NONE)])  # fmt: skip
    assert unreadable(path, STRANGER) is None
    assert "with an access ACL" in (unreadable(path, IN_MY_GROUP) or "")
    _acl(path, [(0x01, 6, NONE), (0x02, 4, STRANGER.uid), (0x04, 0, NONE), (0x10, 0, NONE),
                (0x20, 0, NONE)])  # fmt: skip
    assert unreadable(path, STRANGER) is not None  # the mask takes the read away
    group = next(iter(STRANGER.gids))
    _acl(path, [(0x01, 6, NONE), (0x04, 0, NONE), (0x08, 4, group), (0x10, 4, NONE),
                (0x20, 0, NONE)])  # fmt: skip
    assert unreadable(path, STRANGER) is None


def _owner(path: Path) -> str:
    st = path.stat()
    return f"{pwd.getpwuid(st.st_uid).pw_name}:{grp.getgrgid(st.st_gid).gr_name}"


def _units(tmp_path: Path) -> tuple[Path, Path]:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    (lib / "aisentinel.service.d").mkdir(parents=True)
    (etc / "aisentinel.service.d").mkdir(parents=True)
    (lib / "aisentinel.service").write_text(
        "[Unit]\nUser=nobody-here\n[Service]\nUser=nobody\nSupplementaryGroups=root\n"
    )
    return etc, lib


def test_the_service_account_follows_the_unit_and_its_drop_ins(tmp_path: Path) -> None:
    """The unit's User= (not one of another section), then drop-ins by name: a later
    User=root wins, one in /etc hides the same name in /lib, SupplementaryGroups= adds."""
    etc, lib = _units(tmp_path)
    found = service_account((etc, lib))
    assert found is not None
    account, files = found
    assert (account.name, files) == ("nobody", [lib / "aisentinel.service"])
    assert account.gid == pwd.getpwnam("nobody").pw_gid  # no Group=: the user's own
    assert 0 in account.gids  # SupplementaryGroups=root
    (lib / "aisentinel.service.d" / "ufw.conf").write_text("[Service]\nUser=root\n")
    (etc / "aisentinel.service.d" / "ufw.conf").write_text("[Service]\n# User=root\n")
    assert service_account((etc, lib)) == (account, unit_files((etc, lib)))
    (etc / "aisentinel.service.d" / "ufw.conf").write_text("[Service]\nUser=root\nGroup=root\n")
    found = service_account((etc, lib))
    assert found is not None
    assert (found[0].name, found[0].uid, found[0].group()) == ("root", 0, "root")
    assert found[1] == [lib / "aisentinel.service", etc / "aisentinel.service.d" / "ufw.conf"]
    other = grp.getgrgid(pwd.getpwnam("nobody").pw_gid)
    (etc / "aisentinel.service.d" / "ufw.conf").write_text(
        f"[Service]\nUser=root\nGroup={other.gr_name}\n"
    )
    found = service_account((etc, lib))
    assert found is not None
    assert (found[0].uid, found[0].gid, found[0].group()) == (0, other.gr_gid, other.gr_name)
    assert other.gr_gid in found[0].gids
    assert service_account((tmp_path / "none",)) is None


def test_check_config_refuses_a_rules_file_the_user_cannot_read(
    open_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check-config --user nobody` exits 1 naming a 0600 rules file and the fix; a
    readable one passes; an unknown user is exit 2."""
    rules = open_dir / "rules"
    rules.mkdir(parents=True)
    local = _file(rules, 0o600, "local.toml")
    local.write_text(RULE)
    config = _file(open_dir, 0o644, "aisentinel.toml")
    config.write_text(f'[detectors.rules]\nrules_dir = "{rules}"\n')
    assert main(["check-config", str(config)]) == 0  # its own reader reads it
    capsys.readouterr()
    assert main(["check-config", str(config), "--user", "nobody"]) == 1
    err = capsys.readouterr().err
    assert f"config error: {local}: user nobody cannot read it: no read permission" in err
    assert f"chmod g+r {local}" in err
    local.chmod(0o644)
    assert main(["check-config", str(config), "--user", "nobody"]) == 0
    assert main(["check-config", str(config), "--user", "no-such-user-x"]) == 2


def test_check_config_as_root_judges_for_the_units_user(
    tmp_path: Path,
    open_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run as root on the default config, check-config judges for the account the unit
    runs as: nobody cannot read a 0600 config (exit 1, the unit file named); once a
    drop-in says User=root, root owning it is enough (exit 0)."""
    etc, lib = _units(tmp_path / "units")
    config = _file(open_dir, 0o600, "aisentinel.toml")
    config.write_text("")
    monkeypatch.setenv("AISENTINEL_CONFIG", str(config))
    monkeypatch.setattr(access, "UNIT_DIRS", (etc, lib))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert main(["check-config"]) == 1
    err = capsys.readouterr().err
    assert f"{config}: the service's user nobody ({lib / 'aisentinel.service'}) cannot" in err
    (etc / "aisentinel.service.d" / "fail2ban.conf").write_text("[Service]\nUser=root\n")
    if ME == 0:  # the file is root's only when the test runs as root
        assert main(["check-config"]) == 0, capsys.readouterr().err
    assert main(["check-config", str(config)]) == 0  # another path: only its own reads
