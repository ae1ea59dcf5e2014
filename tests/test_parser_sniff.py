"""Format sniffing for ``--format auto`` and the parser registry."""

from __future__ import annotations

import argparse

import pytest

from aisentinel import cli
from aisentinel.parsers import REGISTRY, ParserContext, build_parser, names, sniff, sniff_order

NGINX = '1.2.3.4 - - [20/Jan/2015:19:53:28 +0100] "GET / HTTP/1.1" 200 5 "-" "curl/8"'
JSON = '{"time": "1764112470.1", "remote_addr": "1.2.3.4", "status": "200"}'
ERROR = (
    '2015/01/21 10:56:10 [error] 2833#0: *1 open() "/x" failed (2: No such file), client: 1.2.3.4'
)
SSHD = "Nov 25 23:14:30 host sshd[1]: pam_unix(sshd:session): session opened for user a"


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([NGINX, NGINX, ""], "nginx"),
        ([JSON, JSON], "nginx-json"),
        ([ERROR, "garbage"], "nginx-error"),
        ([SSHD, SSHD.replace("session opened", "session closed")], "sshd"),
        ([NGINX, SSHD, SSHD], "sshd"),
    ],
)
def test_sniff_picks_the_majority_format(lines: list[str], expected: str) -> None:
    """Sniffing votes per line, counting irrelevant lines of a format as that format."""
    assert sniff(lines) == expected


@pytest.mark.parametrize("peer", ["203.0.113.77", "::ffff:203.0.113.77"])
def test_a_user_agent_shaped_like_an_error_log_cannot_poison_sniffing(peer: str) -> None:
    """An access log whose clients send a user agent that is an error-log line, in every
    sample line, is still sniffed as the combined format."""
    ua = "2026/12/07 19:00:00 [error] 1#1: PAM: user 'a' - not authenticated: x, client: 1.2.3.4,"
    poisoned = NGINX.replace("1.2.3.4", peer).replace("curl/8", ua)
    assert sniff([poisoned] * 60 + [NGINX] * 4) == "nginx"


def test_sniff_refuses_unknown_input() -> None:
    """Unrecognisable samples raise ValueError naming the formats."""
    with pytest.raises(ValueError, match="nginx-json"):
        sniff(["hello", "", "world"])


def test_registry_and_build_parser() -> None:
    """All four formats are registered and build_parser names the known ones on a typo."""
    assert set(REGISTRY.names()) >= {"nginx", "nginx-json", "nginx-error", "sshd"}
    assert build_parser("sshd", ParserContext()).name == "sshd"
    with pytest.raises(KeyError, match="nginx-json"):
        build_parser("apache", ParserContext())


def test_sniff_order_comes_from_each_parsers_sniff_rank() -> None:
    """The sniff order is the registered parsers sorted by their ``sniff`` rank."""
    ranked = sorted((e.factory.sniff, e.name) for e in REGISTRY if e.factory.sniff is not None)
    assert sniff_order() == [name for _, name in ranked]
    assert sniff_order()[0] == "nginx-json"  # most specific first: a JSON line is never nginx


def test_replay_format_choices_are_the_registry_names_and_auto() -> None:
    """`replay --format` offers exactly the registered parsers plus auto."""
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    fmt = next(a for a in sub.choices["replay"]._actions if "--format" in a.option_strings)
    assert fmt.choices == [*REGISTRY.names(), "auto"]
    assert names(auto=True) == [*REGISTRY.names(), "auto"]
