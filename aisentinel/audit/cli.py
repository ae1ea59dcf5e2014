"""``aisentinel audit``: run the hardening checks once and print the result.

The top-level CLI owns the sub-command and the config file; it calls
:func:`add_arguments` on the sub-parser and :func:`run` with the parsed arguments,
the ``[audit]`` table and the exporter's listen address. Exit codes: 0 every check
passed (warnings allowed), 1 a check failed, 2 the audit could not run completely
(a check is ``unknown``, or bad arguments).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from aisentinel.audit.args import add_arguments
from aisentinel.audit.checks import CHECKS
from aisentinel.audit.config import AuditConfig
from aisentinel.audit.context import AuditContext
from aisentinel.audit.engine import UnknownCheckError, run_audit, select_checks
from aisentinel.audit.render import render_json, render_table, wants_colour

__all__ = ["add_arguments", "run"]

EXIT_COULD_NOT_RUN = 2


def run(
    args: argparse.Namespace,
    config: AuditConfig,
    *,
    metrics_listen: str,
    metrics_protection: str = "plain HTTP",
    enforcement: str | None = None,
    enforcement_note: str = "",
    context: AuditContext | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Run the audit as ``args`` ask and print it; returns the exit code.

    ``metrics_listen`` is the exporter's ``host:port`` ("" when off) and
    ``metrics_protection`` what guards it (``WebConfig.describe()``); ``enforcement``
    describes aisentinel's own ban responders when they are at work, and
    ``enforcement_note`` why one configured is not counted. ``context`` and the
    streams are for tests.
    """
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    if getattr(args, "list", False):
        for entry in CHECKS:
            print(f"{entry.name:<26} {entry.factory.title}", file=out)
        return 0
    only = getattr(args, "only", None)
    try:
        checks = select_checks(only=only, skip=() if only else config.skip)
    except UnknownCheckError as exc:
        print(f"aisentinel audit: {exc}", file=err)
        return EXIT_COULD_NOT_RUN
    ctx = context or AuditContext.for_host(
        config,
        metrics_listen=metrics_listen,
        metrics_protection=metrics_protection,
        enforcement=enforcement,
        enforcement_note=enforcement_note,
    )
    report = run_audit(ctx, checks)
    if getattr(args, "json", False):
        print(render_json(report), file=out)
    else:
        colour = wants_colour(out, os.environ)
        print(
            render_table(report, colour=colour, verbose=getattr(args, "verbose", False)), file=out
        )
    return report.exit_code()
