"""The one import of pynvml (nvidia-ml-py), and NVML error codes as names.

pynvml loads ``libnvidia-ml.so.1`` (the driver's library) at ``nvmlInit``; a machine
without the driver raises ``NVMLError`` with ``NVML_ERROR_LIBRARY_NOT_FOUND`` there.
Should pynvml itself be missing, ``pynvml`` is None and the GPU parts report that.
"""

from __future__ import annotations

from typing import Any, Final

try:
    import pynvml as _pynvml
except ImportError:  # pragma: no cover - a declared dependency
    _pynvml = None

pynvml: Any = _pynvml


class _NoPynvmlError(Exception):
    """Stands in for pynvml.NVMLError when pynvml is not installed (never raised)."""


NVMLError: type[Exception] = pynvml.NVMLError if pynvml is not None else _NoPynvmlError

_NAMES: Final[dict[int, str]] = (
    {
        value: name.removeprefix("NVML_ERROR_")
        for name, value in vars(pynvml).items()
        if name.startswith("NVML_ERROR_") and isinstance(value, int)
    }
    if pynvml is not None
    else {}
)

SUCCESS: Final = 0
NOT_SUPPORTED: Final = 3
NO_PERMISSION: Final = 4
NOT_FOUND: Final = 6
DRIVER_NOT_LOADED: Final = 9
LIBRARY_NOT_FOUND: Final = 12
FUNCTION_NOT_FOUND: Final = 13
GPU_IS_LOST: Final = 15
UNINITIALIZED: Final = 1
ARGUMENT_VERSION_MISMATCH: Final = 25


def error_code(exc: BaseException) -> int:
    """The NVML return code an ``NVMLError`` carries (-1 for anything else)."""
    value = getattr(exc, "value", -1)
    return value if isinstance(value, int) else -1


def error_name(code: int) -> str:
    """``GPU_IS_LOST`` for 15; the number for a code pynvml does not name."""
    return _NAMES.get(code, str(code))


def error_text(exc: BaseException) -> str:
    """An NVML error as ``NAME`` (no call into the library, which may be absent)."""
    return error_name(error_code(exc))
