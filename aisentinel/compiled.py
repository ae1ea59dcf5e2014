"""Which of aisentinel's hot modules run compiled by mypyc (``make compiled``).

The compiled build is a copy of the package with an extension module beside each
module named in :data:`HOT_MODULES` (``packaging/build_mypyc.py`` reads the list from
here); Python imports the extension in preference to the ``.py`` beside it. Without
the build, everything runs from the ``.py`` files, with the same results.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys

# The hot modules that compile cleanly and pay (profiled with `aisentinel replay` on the
# bench/storm.py and bench/gen.py files; bench/README.md has the figures). The sshd and
# nginx-error parsers define config models with no field (nothing for mypyc to change);
# compiled, sshd parses in about two thirds of the time, nginx-error in 9% less. Left
# out: modules whose pydantic models have fields (the detector plug-ins, the decision
# engine): mypyc writes a model's annotations without their Annotated[...] constraints
# and pydantic cannot inspect compiled validators, so their configs would validate
# differently; the nginx access parser (no gain: its loop is regex calls and tuple
# building, C either way); events.py (frozen dataclasses that set fields in
# __post_init__) and replay.py (vars() of a dataclass) would need source changes;
# pipeline.py paid <1%.
HOT_MODULES: tuple[str, ...] = (
    "aisentinel.parsers.timestamps",
    "aisentinel.parsers.sshd",
    "aisentinel.parsers.nginx_error",
    "aisentinel.detectors.window",
    "aisentinel.detectors.common",
    "aisentinel.detectors.shared",
    "aisentinel.detectors.paths",
    "aisentinel.decisions.brakes",
)


def _is_extension(origin: str | None) -> bool:
    return origin is not None and origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def compiled_modules() -> list[str]:
    """The modules of :data:`HOT_MODULES` that are (or would be) loaded compiled."""
    found = []
    for name in HOT_MODULES:
        module = sys.modules.get(name)
        if module is not None:
            origin = getattr(module, "__file__", None)
        else:
            spec = importlib.util.find_spec(name)
            origin = spec.origin if spec is not None else None
        if _is_extension(origin):
            found.append(name)
    return found


def describe() -> str:
    """``compiled: yes (N modules)``, ``compiled: partly (N of M modules)`` or ``compiled: no``."""
    n, total = len(compiled_modules()), len(HOT_MODULES)
    if n == 0:
        return "compiled: no"
    if n == total:
        return f"compiled: yes ({n} modules)"
    return f"compiled: partly ({n} of {total} modules)"
