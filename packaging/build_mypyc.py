#!/usr/bin/env python3
"""Build the mypyc-compiled aisentinel: a copy of the package plus the extension modules.

    python packaging/build_mypyc.py OUT_DIR [--python-executable PY] [--jobs N] [--opt-level 3]

OUT_DIR/aisentinel is a full copy of ./aisentinel (the ``.py`` files stay, as the
fallback source; OUT_DIR/tests/fakenvml is copied too, for ``aisentinel demo``) with one extension module beside each module of
``aisentinel.compiled.HOT_MODULES`` and the shared library mypyc puts them in
(``OUT_DIR/aisentinel__mypyc*.so``). ``PYTHONPATH=OUT_DIR`` then imports the compiled
package; the source tree is never written to. The interpreter running this script is
the one the extensions are built for: it needs mypy (which ships mypyc), setuptools, a
C compiler and its own Python headers. ``--python-executable`` names the interpreter
whose site-packages mypy reads the dependencies' types from (default: this one).

Exit status 0 when every hot module was built and imports as an extension (checked in
a fresh interpreter), 1 otherwise (the reason on stderr).
"""

from __future__ import annotations

import argparse
import ast
import compileall
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "aisentinel"


def hot_modules() -> list[str]:
    """HOT_MODULES of aisentinel/compiled.py, read without importing the package."""
    tree = ast.parse((PACKAGE / "compiled.py").read_text())
    for node in tree.body:
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and node.target.id == "HOT_MODULES"
            and node.value is not None
        ):
            return list(ast.literal_eval(node.value))
    raise SystemExit("build_mypyc: no HOT_MODULES in aisentinel/compiled.py")


def mypy_config(out: Path) -> Path:
    """The project's [tool.mypy] import settings, without its file list (we name files)."""
    path = out / "mypy.ini"
    path.write_text(
        "[mypy]\npython_version = 3.11\n"
        "[mypy-systemd.*,watchdog.*,apscheduler.*,docker.*,pynvml.*,re2,ahocorasick]\n"
        "ignore_missing_imports = True\n"
    )
    return path


def build(out: Path, python_executable: str, jobs: int, opt_level: str) -> None:
    # Imported here, after argument parsing: --help needs neither.
    from mypyc.build import mypycify  # noqa: PLC0415
    from setuptools import Distribution  # noqa: PLC0415

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copytree(PACKAGE, out / "aisentinel", ignore=shutil.ignore_patterns("__pycache__"))
    # What the package reads from the checkout beside it: the demo's fake NVML source.
    fake_nvml = ROOT / "tests" / "fakenvml"
    if fake_nvml.is_dir():
        shutil.copytree(fake_nvml, out / "tests" / "fakenvml")
    modules = hot_modules()
    paths = [str(Path(*m.split(".")).with_suffix(".py")) for m in modules]
    with tempfile.TemporaryDirectory(prefix="aisentinel-mypyc-") as tmp:
        config = mypy_config(Path(tmp))
        cwd = Path.cwd()
        os.chdir(out)
        try:
            extensions = mypycify(
                [
                    f"--config-file={config}",
                    f"--cache-dir={Path(tmp) / 'mypy_cache'}",
                    f"--python-executable={python_executable}",
                    *paths,
                ],
                opt_level=opt_level,
                debug_level="0",
                group_name="aisentinel",
                target_dir=str(Path(tmp) / "c"),
            )
            dist = Distribution({"name": "aisentinel-mypyc", "ext_modules": extensions})
            cmd = dist.get_command_obj("build_ext")
            cmd.inplace = True
            cmd.build_temp = str(Path(tmp) / "obj")
            cmd.build_lib = str(Path(tmp) / "lib")
            cmd.parallel = jobs
            dist.run_command("build_ext")
        finally:
            os.chdir(cwd)
    check(out, modules, python_executable)
    # Byte-code beside the sources, as an installed package has it (python -m compileall).
    compileall.compile_dir(str(out / "aisentinel"), quiet=1)


def check(out: Path, modules: list[str], python_executable: str) -> None:
    """Every hot module imports as an extension from OUT in a fresh interpreter."""
    code = (
        "import importlib, sys\n"
        "bad = [m for m in sys.argv[1:]\n"
        "       if not importlib.import_module(m).__file__.endswith('.so')]\n"
        "sys.exit('not compiled: ' + ' '.join(bad) if bad else 0)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(out), PYTHONDONTWRITEBYTECODE="1")
    result = subprocess.run(
        [python_executable, "-c", code, *modules], env=env, cwd=out, check=False
    )
    if result.returncode != 0:
        raise SystemExit("build_mypyc: the built modules do not import")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--python-executable", default=sys.executable)
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--opt-level", default="3", help="the C compiler's -O level")
    args = ap.parse_args(argv)
    build(args.out.resolve(), args.python_executable, args.jobs, args.opt_level)
    print(f"build_mypyc: {len(hot_modules())} modules compiled into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
