"""The control socket: JSON lines protocol, bad input, who may connect, stale and live sockets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from aisentinel import control as control_module
from aisentinel.control import (
    CommandError,
    ControlError,
    ControlServer,
    DaemonNotRunning,
    PermissionRefused,
    request,
)

OTHER_UID = 54321
"""A uid and gid no account uses, for a peer that is not root nor in the socket's group."""

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching uid needs root")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A short temporary directory (a Unix socket path has at most 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="as-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _fail(_args: Mapping[str, Any]) -> Any:
    raise CommandError("no such ban: 192.0.2.1")


def _crash(_args: Mapping[str, Any]) -> Any:
    raise RuntimeError("boom")


HANDLERS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "echo": dict,
    "fail": _fail,
    "crash": _crash,
}


@pytest.fixture
def server(short_dir: Path) -> Iterator[ControlServer]:
    """A control server with a few test commands, its socket in a fresh directory."""
    srv = ControlServer(short_dir / "run" / "control.sock", HANDLERS, connection_seconds=2.0)
    srv.start()
    yield srv
    srv.stop()


def _raw(path: Path, payload: bytes, *, shut: bool = False) -> list[dict[str, Any]]:
    """Send raw bytes and return every answer line until the server closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(payload)
        if shut:
            sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
            if not shut and data.endswith(b"\n"):
                break
    return [json.loads(line) for line in data.splitlines()]


def test_request_round_trip_passes_arguments(server: ControlServer) -> None:
    """A command's handler gets the request's other fields and its result comes back."""
    assert request(server.path, "echo", ip="192.0.2.7", ttl=60) == {"ip": "192.0.2.7", "ttl": 60}


def test_several_requests_on_one_connection(server: ControlServer) -> None:
    """Each request line gets one answer line, in order, on the same connection."""
    answers = _raw(
        server.path, b'{"command": "echo", "n": 1}\n{"command": "echo", "n": 2}\n', shut=True
    )
    assert answers == [{"ok": True, "result": {"n": 1}}, {"ok": True, "result": {"n": 2}}]


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"{not json\n", "bad request: not a JSON object"),
        (b"[1, 2]\n", "bad request: not a JSON object"),
        (b'{"cmd": "status"}\n', 'no "command" string'),
        (b'{"command": "nope"}\n', 'unknown command "nope" (known: crash, echo, fail)'),
        (b'{"command": "fail"}\n', "no such ban: 192.0.2.1"),
        (b'{"command": "crash"}\n', "internal error in crash: RuntimeError"),
        (b"\xff\xfe\n", "bad request: not a JSON object"),
    ],
)
def test_bad_requests_get_an_error_answer_and_serving_goes_on(
    server: ControlServer, payload: bytes, error: str
) -> None:
    """Bad JSON, a missing or unknown command, a failing handler: an error answer, no crash."""
    [answer] = _raw(server.path, payload)
    assert answer["ok"] is False
    assert error in answer["error"]
    assert request(server.path, "echo", still="here") == {"still": "here"}


def test_oversize_request_is_refused_and_serving_goes_on(server: ControlServer) -> None:
    """A request over the size cap gets an error answer; the next client is served."""
    [answer] = _raw(server.path, b'{"command": "echo", "x": "' + b"a" * 70_000 + b'"}\n')
    assert answer == {"ok": False, "error": "request too large (over 65536 bytes)"}
    assert request(server.path, "echo") == {}
    assert server.errors >= 1


def test_silent_client_is_dropped_and_serving_goes_on(short_dir: Path) -> None:
    """A client that connects and sends nothing is closed at the connection deadline."""
    srv = ControlServer(short_dir / "c.sock", HANDLERS, connection_seconds=0.3)
    srv.start()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(srv.path))
            assert sock.recv(10) == b""  # closed by the server, no answer
        assert request(srv.path, "echo", n=3) == {"n": 3}
    finally:
        srv.stop()


def test_socket_and_directory_modes(server: ControlServer) -> None:
    """The directory is created 0750 and the socket is 0660; stop removes the socket."""
    assert stat.S_IMODE(server.path.parent.stat().st_mode) == 0o750
    st = server.path.lstat()
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    server.stop()
    assert not server.path.exists()


def test_the_socket_is_0660_under_the_units_umask(short_dir: Path) -> None:
    """Under the unit's UMask=0077 the socket file is still created 0660 (the group may
    connect), and the process's umask is as it was once it is bound."""
    old = os.umask(0o077)
    try:
        srv = ControlServer(short_dir / "c.sock", HANDLERS)
        srv.start()
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(old)
    try:
        assert stat.S_IMODE((short_dir / "c.sock").lstat().st_mode) == 0o660
        assert request(srv.path, "echo", n=2) == {"n": 2}
    finally:
        srv.stop()


def test_a_link_swapped_in_after_bind_is_not_chmodded(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symbolic link put at the socket's path right after bind() (someone who can write
    the directory, racing a re-bind) is never chmodded through: the file it names keeps
    its mode, and the bind is refused as replaced."""
    victim = short_dir / "victim"
    victim.write_text("x")
    victim.chmod(0o600)
    path = short_dir / "c.sock"

    class Racing(socket.socket):
        def bind(self, address: Any) -> None:
            super().bind(address)
            Path(address).unlink()
            Path(address).symlink_to(victim)

    monkeypatch.setattr(control_module.socket, "socket", Racing)
    srv = ControlServer(path, HANDLERS)
    with pytest.raises(ControlError, match="replaced"):
        srv.start()
    monkeypatch.undo()
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert path.is_symlink()


def test_live_socket_is_not_taken_over(server: ControlServer) -> None:
    """A second server on a path another one serves refuses to start; the first serves on."""
    second = ControlServer(server.path, HANDLERS)
    with pytest.raises(ControlError, match="another daemon is serving"):
        second.start()
    assert request(server.path, "echo", n=1) == {"n": 1}


def test_stale_socket_is_replaced(short_dir: Path) -> None:
    """A socket file left by a dead daemon (nobody listening) is removed and re-bound."""
    path = short_dir / "c.sock"
    old = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old.bind(str(path))
    old.close()  # the file stays, nobody listens
    with pytest.raises(DaemonNotRunning, match=str(path)):
        request(path, "echo")
    srv = ControlServer(path, HANDLERS)
    srv.start()
    try:
        assert request(path, "echo", n=2) == {"n": 2}
    finally:
        srv.stop()


def test_other_file_at_the_path_is_left_alone(short_dir: Path) -> None:
    """A regular file where the socket should be is neither removed nor replaced, and
    the client says it is not a socket rather than that no daemon runs."""
    path = short_dir / "c.sock"
    path.write_text("precious")
    with pytest.raises(ControlError, match="exists and is not a socket"):
        ControlServer(path, HANDLERS).start()
    assert path.read_text() == "precious"
    with pytest.raises(ControlError, match="is not a socket: a daemon started with it") as err:
        request(path, "status")
    assert not isinstance(err.value, DaemonNotRunning)


def test_a_removed_socket_file_is_bound_again(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Someone removes the socket file of a running server: within a check it listens on
    a new one at the same path, and clients reach it again."""
    monkeypatch.setattr(control_module, "CHECK_SECONDS", 0.05)
    srv = ControlServer(short_dir / "c.sock", HANDLERS)
    srv.start()
    try:
        srv.path.unlink()
        assert wait_for(lambda: _answers(srv.path))
        assert srv.problem is None
        assert request(srv.path, "echo", n=3) == {"n": 3}
    finally:
        srv.stop()
    assert not srv.path.exists()  # the new socket file is its own: removed at stop


def test_a_socket_file_replaced_by_another_file_is_a_problem_until_it_goes(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A regular file put where the socket was is left alone and the server says why it
    cannot be reached (the daemon reports control degraded); once it is gone the
    server binds again."""
    monkeypatch.setattr(control_module, "CHECK_SECONDS", 0.05)
    srv = ControlServer(short_dir / "c.sock", HANDLERS)
    srv.start()
    try:
        other = short_dir / "other"
        other.write_text("precious")
        other.replace(srv.path)  # in one step: no moment with the path free
        assert wait_for(lambda: srv.problem is not None)
        assert "not a socket" in str(srv.problem)
        assert srv.path.read_text() == "precious"
        srv.path.unlink()
        assert wait_for(lambda: srv.problem is None and _answers(srv.path))
    finally:
        srv.stop()


def _answers(path: Path) -> bool:
    try:
        return bool(request(path, "echo", n=1) == {"n": 1})
    except ControlError:
        return False


def test_unusable_path_is_one_clear_error(short_dir: Path) -> None:
    """A socket path under a regular file gives a ControlError naming the directory."""
    (short_dir / "file").write_text("")
    with pytest.raises(ControlError, match="cannot create"):
        ControlServer(short_dir / "file" / "c.sock", HANDLERS).start()


def test_no_socket_means_not_running(short_dir: Path) -> None:
    """The client reports a missing socket as 'not running', naming the path."""
    with pytest.raises(DaemonNotRunning, match=r"no daemon at .*nothing\.sock"):
        request(short_dir / "nothing.sock", "status")


def _as_other_user(path: Path, groups: list[int]) -> str:
    """In a child with uid/gid OTHER_UID and ``groups``, ask ``echo``; what happened."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to another user, ask, report through the pipe
        code = 0
        try:
            os.close(read)
            os.setgroups(groups)
            os.setgid(OTHER_UID)
            os.setuid(OTHER_UID)
            try:
                outcome = f"ok {request(path, 'echo', n=1)}"
            except PermissionRefused as exc:
                outcome = f"refused {exc}"
            os.write(write, outcome.encode())
        except BaseException as exc:  # noqa: BLE001 - a forked child never returns into pytest
            os.write(write, f"child failed: {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        outcome = fh.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, outcome
    return outcome


@root_only
def test_peer_of_another_user_and_group_is_refused(short_dir: Path) -> None:
    """With the file system opened up, the server still refuses a peer not root, not the
    daemon's user and not in the socket's group (SO_PEERCRED), with a clear error."""
    srv = ControlServer(short_dir / "c.sock", HANDLERS)
    srv.start()
    try:
        short_dir.chmod(0o755)
        srv.path.chmod(0o666)
        outcome = _as_other_user(srv.path, groups=[])
        assert outcome.startswith(f"refused permission denied: uid {OTHER_UID} is not root")
        assert "member of group" in outcome
        assert srv.refused == 1
        assert request(srv.path, "echo", n=2) == {"n": 2}  # root is still served
    finally:
        srv.stop()


@root_only
def test_peer_in_the_sockets_group_is_served(short_dir: Path) -> None:
    """A peer whose supplementary groups include the socket's group is served."""
    srv = ControlServer(short_dir / "c.sock", HANDLERS)
    srv.start()
    try:
        short_dir.chmod(0o755)
        group = srv.path.lstat().st_gid
        assert _as_other_user(srv.path, groups=[group]) == "ok {'n': 1}"
        assert srv.refused == 0
    finally:
        srv.stop()


@root_only
def test_file_system_refusal_is_permission_refused(short_dir: Path) -> None:
    """A user the 0750 directory keeps out gets PermissionRefused from the client."""
    srv = ControlServer(short_dir / "run" / "c.sock", HANDLERS)
    srv.start()
    try:
        short_dir.chmod(0o755)
        outcome = _as_other_user(srv.path, groups=[])
        assert outcome == f"refused permission denied on {srv.path}"
        assert srv.refused == 0  # the file system refused it first
    finally:
        srv.stop()
