"""Talking to nftables with JSON documents: in-process through libnftables, or ``nft -j -f -``.

The nftables responder builds one JSON document (``{"nftables": [...]}``) per
transaction and hands it to a :class:`NftBackend`:

- :class:`LibNftables` runs it in this process through ``libnftables.so.1`` (no fork
  per batch; one netlink transaction). It uses Debian's ``python3-nftables`` module
  when this interpreter can import it, else a small ctypes binding of the same C API
  (``nft_ctx_new``, ``nft_ctx_output_set_flags``, ``nft_ctx_buffer_output`` /
  ``_error``, ``nft_run_cmd_from_buffer``, ``nft_ctx_get_output_buffer`` /
  ``_error_buffer``, ``nft_ctx_free``): ``python3-nftables`` is built for Debian's
  ``/usr/bin/python3`` and a virtual environment on another interpreter cannot
  import it.
- :class:`NftCommand` pipes the same document into ``nft -j -f -`` through the
  injected :class:`~aisentinel.commands.CommandRunner` (argument list, timeout, no
  shell): the fallback, and what tests drive with a ``FakeRunner``.

Both raise :class:`NftError` with nft's own one-line message when a document fails.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import threading
from typing import Any, Protocol

from aisentinel.commands import CommandError, CommandRunner

LIBRARY = "libnftables.so.1"
"""The shared library's soname (Debian: package libnftables1, pulled in by nftables)."""

_OUTPUT_JSON = 1 << 4
"""``NFT_CTX_OUTPUT_JSON``: JSON output, and JSON input for ``nft_run_cmd_from_buffer``."""


class NftError(Exception):
    """A document was refused or nftables could not be reached; the text says why."""


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # nft repeats the whole input and a caret line after the error: keep the error.
    first = next((line for line in lines if line.startswith("Error")), lines[0] if lines else "")
    return first[:300] or "nftables gave no reason"


def _parse(output: str) -> dict[str, Any]:
    if not output.strip():
        return {"nftables": []}
    try:
        data = json.loads(output)
    except ValueError as exc:
        raise NftError(f"nftables answered something that is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NftError("nftables answered JSON that is not an object")
    return data


class NftBackend(Protocol):
    """Runs one JSON document as one transaction; returns nft's JSON output."""

    name: str

    def run(self, document: dict[str, Any]) -> dict[str, Any]:
        """Apply (or list) ``document``; raise :class:`NftError` on failure."""
        ...

    def close(self) -> None:
        """Release the context (if any)."""
        ...


class _Ctypes:
    """The C API of libnftables through ctypes (one context)."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(LIBRARY)
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_free.restype = None
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        for fn in (lib.nft_ctx_buffer_output, lib.nft_ctx_buffer_error):
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_void_p]
        for fn in (lib.nft_ctx_get_output_buffer, lib.nft_ctx_get_error_buffer):
            fn.restype = ctypes.c_char_p
            fn.argtypes = [ctypes.c_void_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        ctx = lib.nft_ctx_new(0)
        if not ctx:
            raise OSError("nft_ctx_new failed")
        lib.nft_ctx_output_set_flags(ctx, _OUTPUT_JSON)
        if lib.nft_ctx_buffer_output(ctx) or lib.nft_ctx_buffer_error(ctx):
            lib.nft_ctx_free(ctx)
            raise OSError("nft_ctx_buffer_output failed")
        self._lib = lib
        self._ctx: int | None = ctx

    def cmd(self, text: str) -> tuple[int, str, str]:
        if self._ctx is None:
            raise NftError("libnftables context is closed")
        lib = self._lib
        rc = lib.nft_run_cmd_from_buffer(self._ctx, text.encode())
        out = lib.nft_ctx_get_output_buffer(self._ctx) or b""
        err = lib.nft_ctx_get_error_buffer(self._ctx) or b""
        return rc, out.decode(errors="replace"), err.decode(errors="replace")

    def close(self) -> None:
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None


class _Module:
    """Debian's ``python3-nftables`` module, when this interpreter can import it."""

    def __init__(self, module: Any) -> None:
        self._nft = module.Nftables()
        self._nft.set_json_output(True)

    def cmd(self, text: str) -> tuple[int, str, str]:
        rc, out, err = self._nft.cmd(text)
        return int(rc), str(out or ""), str(err or "")

    def close(self) -> None:
        self._nft = None


class LibNftables:
    """In-process nftables (see the module docstring); ``OSError`` if unavailable."""

    def __init__(self) -> None:
        impl: _Ctypes | _Module
        try:
            impl = _Module(importlib.import_module("nftables"))
            self.name = "python3-nftables"
        except Exception:  # noqa: BLE001 - missing or broken module: use the C library
            impl = _Ctypes()
            self.name = "libnftables"
        self._impl = impl
        self._lock = threading.Lock()

    def run(self, document: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(document, separators=(",", ":"))
        with self._lock:
            rc, out, err = self._impl.cmd(text)
        if rc != 0:
            raise NftError(_one_line(err or out))
        return _parse(out)

    def close(self) -> None:
        with self._lock:
            self._impl.close()


class NftCommand:
    """``nft -j -f -`` through the command runner, the document on its stdin."""

    name = "nft"

    def __init__(self, commands: CommandRunner, *, timeout: float) -> None:
        self.commands = commands
        self.timeout = timeout

    def available(self) -> bool:
        """Whether ``nft`` is installed."""
        return self.commands.has("nft")

    def run(self, document: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(document, separators=(",", ":"))
        try:
            result = self.commands.run(["nft", "-j", "-f", "-"], timeout=self.timeout, input=text)
        except CommandError as exc:
            raise NftError(str(exc)) from None
        if not result.ok:
            raise NftError(_one_line(result.stderr or result.stdout))
        return _parse(result.stdout)

    def close(self) -> None:
        """Nothing to release."""


def load_library() -> LibNftables | None:
    """An in-process backend, or ``None`` when libnftables cannot be loaded here."""
    try:
        return LibNftables()
    except OSError:
        return None
