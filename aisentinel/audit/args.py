"""The ``aisentinel audit`` command-line options (light: no check is imported here)."""

from __future__ import annotations

import argparse

__all__ = ["add_arguments"]


def _id_list(text: str) -> list[str]:
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids:
        raise argparse.ArgumentTypeError("expected check ids separated by commas")
    return ids


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``audit`` options to ``parser``."""
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--only",
        type=_id_list,
        metavar="ID[,ID...]",
        help="run only these checks (overrides [audit] skip); see --list",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="also show the evidence of passing checks"
    )
    parser.add_argument("--list", action="store_true", help="list the check ids and exit")
