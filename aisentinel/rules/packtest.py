"""Turn a rule's ``tests`` entries into access-log lines (pack tests, ``rules list``)."""

from __future__ import annotations

from aisentinel.rules.model import RuleTest

TEST_CLIENT = "192.0.2.10"
"""Address of the generated lines (TEST-NET-1)."""


def rule_test_line(test: RuleTest, n: int = 0) -> str:
    """The combined-format line of ``test`` (its own ``line`` when it has one); ``n``
    spreads the time stamps a second apart."""
    if test.line is not None:
        return test.line
    user = test.user or "-"
    agent = test.agent.replace('"', "\\x22")
    referer = "-" if test.referer is None else test.referer.replace('"', "\\x22")
    second = n % 60
    minute = n // 60 % 60
    return (
        f"{TEST_CLIENT} - {user} [01/Jan/2025:00:{minute:02d}:{second:02d} +0000] "
        f'"{test.request}" {test.status} 153 "{referer}" "{agent}"'
    )
