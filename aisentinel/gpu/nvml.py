"""The one import of pynvml (nvidia-ml-py), and NVML error codes as names.

pynvml loads ``libnvidia-ml.so.1`` (the driver's library) at ``nvmlInit``; a machine
without the driver raises ``NVMLError`` with ``NVML_ERROR_LIBRARY_NOT_FOUND`` there.
Should pynvml itself be missing, ``pynvml`` is None and the GPU parts report that.
pynvml is imported on first use (see ``__getattr__``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final


class _NoPynvmlError(Exception):
    """Stands in for pynvml.NVMLError when pynvml is not installed (never raised)."""


_NAMES: dict[int, str] = {}
_LOADED = False

# pynvml (a 5,000-line module, about 1 MB resident) is imported on first use of
# ``pynvml`` or ``NVMLError`` (module ``__getattr__``), so a daemon without a GPU
# source never loads it. Read them as ``nvml.pynvml`` / ``nvml.NVMLError`` at call time.
if TYPE_CHECKING:
    pynvml: Any
    NVMLError: type[Exception]


def _load() -> None:
    global _LOADED  # noqa: PLW0603 - the one lazy import
    try:
        import pynvml as module  # noqa: PLC0415
    except ImportError:  # pragma: no cover - a declared dependency
        module = None
    globals()["pynvml"] = module
    globals()["NVMLError"] = module.NVMLError if module is not None else _NoPynvmlError
    if module is not None:
        _NAMES.update(
            (value, name.removeprefix("NVML_ERROR_"))
            for name, value in vars(module).items()
            if name.startswith("NVML_ERROR_") and isinstance(value, int)
        )
    _LOADED = True


def __getattr__(name: str) -> Any:
    if name in ("pynvml", "NVMLError") and not _LOADED:
        _load()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


SUCCESS: Final = 0
NOT_SUPPORTED: Final = 3
NO_PERMISSION: Final = 4
NOT_FOUND: Final = 6
DRIVER_NOT_LOADED: Final = 9
LIBRARY_NOT_FOUND: Final = 12
FUNCTION_NOT_FOUND: Final = 13
GPU_IS_LOST: Final = 15
LIB_RM_VERSION_MISMATCH: Final = 18
UNINITIALIZED: Final = 1
ARGUMENT_VERSION_MISMATCH: Final = 25


def error_code(exc: BaseException) -> int:
    """The NVML return code an ``NVMLError`` carries (-1 for anything else)."""
    value = getattr(exc, "value", -1)
    return value if isinstance(value, int) else -1


def error_name(code: int) -> str:
    """``GPU_IS_LOST`` for 15; the number for a code pynvml does not name."""
    if not _LOADED:
        _load()
    return _NAMES.get(code, str(code))


def error_text(exc: BaseException) -> str:
    """An NVML error as ``NAME`` (no call into the library, which may be absent)."""
    return error_name(error_code(exc))
