"""The sd_notify protocol: tell systemd the daemon is ready, alive, reloading or stopping.

A :class:`Notifier` sends ``KEY=value`` lines to the datagram socket named by
``NOTIFY_SOCKET`` (a path, or an abstract socket written ``@name``). Without
``NOTIFY_SOCKET`` (not started by systemd, or ``Type=`` is not ``notify``) every call is a
no-op that returns ``False``. When systemd-python is importable, messages go through
``systemd.daemon.notify`` (libsystemd's ``sd_notify``); otherwise through a small
``AF_UNIX`` implementation of the same protocol. Sending never raises: a lost
notification is reported by the ``False`` return, never by crashing the daemon.

The watchdog contract: when ``WATCHDOG_USEC`` is set (``WatchdogSec=`` in the unit) and
``WATCHDOG_PID`` is unset or names this process, :meth:`Notifier.watchdog_interval` gives
the interval at which the daemon must call :meth:`Notifier.watchdog` (half the timeout,
as systemd recommends). Call it from the pipeline's own heartbeat, so a hung pipeline
stops the pings and systemd restarts the service.
"""

from __future__ import annotations

import importlib
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import Literal

__all__ = ["Backend", "Notifier"]

Backend = Literal["auto", "socket", "libsystemd"]

_SendFn = Callable[[str], bool]


def _libsystemd_notify() -> _SendFn | None:
    """``systemd.daemon.notify`` when systemd-python is importable, else ``None``."""
    try:
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify = daemon.notify

    def send(message: str) -> bool:
        try:
            return bool(notify(message))
        except OSError:
            return False

    return send


def _socket_address(address: str) -> str | bytes:
    """The ``AF_UNIX`` address for a ``NOTIFY_SOCKET`` value; ``@`` means abstract."""
    if address.startswith("@"):
        return b"\0" + address[1:].encode()
    return address


class Notifier:
    """Sends sd_notify messages to one socket; a no-op when ``address`` is ``None``."""

    def __init__(
        self,
        address: str | None,
        *,
        watchdog_usec: int | None = None,
        watchdog_pid: int | None = None,
        backend: Backend = "auto",
    ) -> None:
        """Target ``address`` (``NOTIFY_SOCKET`` syntax).

        ``watchdog_usec``/``watchdog_pid`` are the values of ``WATCHDOG_USEC`` and
        ``WATCHDOG_PID``. ``backend="auto"`` uses libsystemd when importable and the
        address is the process's own ``NOTIFY_SOCKET`` (libsystemd reads it from the
        environment), else the built-in socket code. Raises ``ValueError`` for an
        address that is neither absolute nor abstract, a non-positive watchdog timeout,
        or ``backend="libsystemd"`` without systemd-python.
        """
        if address is not None and not (address.startswith(("/", "@")) and len(address) > 1):
            raise ValueError(
                f"NOTIFY_SOCKET={address!r}: expected an absolute path or '@abstract-name'"
            )
        if watchdog_usec is not None and watchdog_usec <= 0:
            raise ValueError(f"WATCHDOG_USEC={watchdog_usec}: expected a positive integer")
        self._address = address
        self._watchdog_usec = watchdog_usec
        self._watchdog_pid = watchdog_pid
        self._send: _SendFn = self._send_socket
        if backend == "libsystemd" or (
            backend == "auto" and address is not None and os.environ.get("NOTIFY_SOCKET") == address
        ):
            libsystemd = _libsystemd_notify()
            if libsystemd is not None:
                self._send = libsystemd
            elif backend == "libsystemd":
                raise ValueError("backend 'libsystemd' needs systemd-python, which is missing")
        self.backend: Literal["socket", "libsystemd"] = (
            "socket" if self._send == self._send_socket else "libsystemd"
        )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, backend: Backend = "auto"
    ) -> Notifier:
        """A notifier for ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID`` in ``environ``.

        ``environ`` defaults to ``os.environ``, which is read, never changed. Raises
        ``ValueError`` naming the variable when one of them is malformed.
        """
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET") or None
        return cls(
            address,
            watchdog_usec=_int_var(env, "WATCHDOG_USEC"),
            watchdog_pid=_int_var(env, "WATCHDOG_PID"),
            backend=backend,
        )

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere (``NOTIFY_SOCKET`` was set)."""
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; ``True`` if it was sent.

        Raises ``ValueError`` for an assignment without ``=`` or with a newline (it
        would corrupt the message); never raises for a send failure.
        """
        for item in assignments:
            if "=" not in item or "\n" in item:
                raise ValueError(f"sd_notify assignment {item!r}: expected one KEY=value line")
        if self._address is None or not assignments:
            return False
        return self._send("\n".join(assignments))

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (sources open); optionally with a status line."""
        return self.notify("READY=1", *self._status_items(status))

    def reloading(self) -> bool:
        """``RELOADING=1``: a config reload began; call :meth:`ready` when it is done."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown began."""
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        """``STATUS=text``: one line shown by ``systemctl status`` (newlines become spaces)."""
        return self.notify(*self._status_items(text))

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the keep-alive ping; send it every :meth:`watchdog_interval`."""
        return self.notify("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of ``WATCHDOG_USEC``), or ``None``.

        ``None`` when no watchdog is configured or ``WATCHDOG_PID`` names another
        process (the variables were inherited from a parent).
        """
        if self._watchdog_usec is None:
            return None
        if self._watchdog_pid is not None and self._watchdog_pid != os.getpid():
            return None
        return self._watchdog_usec / 2_000_000

    @staticmethod
    def _status_items(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        return ("STATUS=" + " ".join(text.splitlines()),)

    def _send_socket(self, message: str) -> bool:
        if self._address is None:
            return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.sendto(message.encode(), _socket_address(self._address))
        except OSError:
            return False
        return True


def _int_var(env: Mapping[str, str], name: str) -> int | None:
    """The integer value of ``env[name]``, ``None`` when unset or empty."""
    raw = env.get(name)
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected an integer") from None
