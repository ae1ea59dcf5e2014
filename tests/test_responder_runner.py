"""The responder runner: fan-out, retries with back-off, give-up, stats, simulate."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import ClassVar

import pytest
from structlog.testing import capture_logs

from aisentinel.clock import FakeClock
from aisentinel.events import Action, AddressTarget, Decision, Severity
from aisentinel.responders import (
    Operation,
    PartialError,
    ReconcileUnfinishedError,
    Responder,
    ResponderConfigBase,
    ResponderError,
    ResponderHealth,
    ResponderRunner,
)

T0 = 1_764_000_000.0


def ban(target: str = "203.0.113.7", ttl: float = 3600.0, *, simulated: bool = False) -> Decision:
    return Decision(
        ts=T0,
        action=Action.BAN,
        target=AddressTarget.parse(target),
        detector="ssh_bruteforce",
        severity=Severity.HIGH,
        reason="test",
        ttl=ttl,
        expires_at=T0 + ttl,
        simulated=simulated,
    )


class Flaky(Responder):
    """Fails its next ``failures`` transactions, then works; records what succeeded.

    ``calls`` has one entry per transaction (a commit or a reconcile) with its
    monotonic time; ``done`` one entry per operation that was committed.
    """

    name: ClassVar[str] = "flaky"

    def __init__(self, clock: FakeClock, failures: int = 0, name: str = "flaky") -> None:
        super().__init__(ResponderConfigBase(), clock=clock)
        self.name = name  # type: ignore[misc]
        self.failures = failures
        self.error: Exception = ResponderError("backend down")
        self.calls: list[tuple[str, object, float]] = []
        self.done: list[tuple[str, object]] = []
        self.staged: list[tuple[str, object]] = []
        self.commits = 0
        self.discards = 0
        self.healthy = True
        self.closed = False

    def _step(self, op: str, arg: object) -> None:
        self.calls.append((op, arg, self.clock.monotonic()))
        if self.failures > 0:
            self.failures -= 1
            raise self.error

    def add_many(self, decisions: Sequence[Decision]) -> None:
        self.staged.extend(("add", text(d)) for d in decisions)

    def delete_many(self, decisions: Sequence[Decision]) -> None:
        self.staged.extend(("delete", text(d)) for d in decisions)

    def commit(self) -> None:
        self._step("commit", list(self.staged))
        self.commits += 1
        self.done.extend(self.staged)
        self.staged = []

    def discard(self) -> None:
        self.discards += 1
        self.staged = []

    def reconcile(self, active: Sequence[Decision]) -> None:
        self._step("reconcile", sorted(text(d) for d in active))
        self.done.append(("reconcile", sorted(text(d) for d in active)))

    def health(self) -> ResponderHealth:
        if not self.healthy:
            raise ResponderError("no nft binary")
        return ResponderHealth(ok=True, detail="fine")

    def close(self) -> None:
        self.closed = True
        raise ResponderError("close failed")


def text(decision: Decision) -> str:
    """The decision's target as text."""
    return decision.target.text if decision.target is not None else ""


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def run_until(runner: ResponderRunner, clock: FakeClock, seconds: float) -> None:
    """Tick once a second for ``seconds`` seconds of fake time."""
    for _ in range(int(seconds)):
        clock.advance(1)
        runner.tick()


def test_ban_reaches_every_responder(clock: FakeClock) -> None:
    """A ban is added on each responder; alerts and NONE decisions reach none."""
    a, b = Flaky(clock, name="a"), Flaky(clock, name="b")
    runner = ResponderRunner([a, b], clock)
    runner.submit(ban())
    other = AddressTarget.parse("198.51.100.1")
    runner.submit(Decision(T0, Action.ALERT, other, "x", Severity.LOW, "alert"))
    runner.submit(Decision(T0, Action.NONE, other, "x", Severity.LOW, "none"))
    assert a.done == b.done == []  # submitting only queues
    assert runner.tick() == 2
    assert a.done == b.done == [("add", "203.0.113.7")]
    assert [s.ok[Operation.ADD] for s in runner.stats()] == [1, 1]


def test_simulated_decisions_never_reach_responders(clock: FakeClock) -> None:
    """Simulated bans are not added, deleted or reconciled on any responder."""
    r = Flaky(clock)
    runner = ResponderRunner([r], clock)
    runner.submit(ban(simulated=True))
    runner.submit_expired([ban(simulated=True)])
    runner.reconcile([ban("198.51.100.1", simulated=True), ban("198.51.100.2")])
    runner.tick()
    assert r.done == [("reconcile", ["198.51.100.2"])]
    assert runner.skipped_simulated == 1


def test_failure_is_retried_after_backoff(clock: FakeClock) -> None:
    """A failed add is retried by tick after 1 s, then 2 s, and counted as it goes."""
    r = Flaky(clock, failures=2)
    runner = ResponderRunner([r], clock)
    runner.submit(ban())
    assert runner.tick() == 1
    assert runner.pending() == 1
    assert runner.tick() == 0
    run_until(runner, clock, 5)
    assert [t for _, _, t in r.calls] == [0.0, 1.0, 3.0]
    assert r.done == [("add", "203.0.113.7")]
    (stats,) = runner.stats()
    assert (stats.ok[Operation.ADD], stats.failed[Operation.ADD]) == (1, 2)
    assert (stats.retried[Operation.ADD], stats.given_up[Operation.ADD], stats.pending) == (2, 0, 0)


def test_tick_with_wall_clock_now_keeps_the_backoff(clock: FakeClock) -> None:
    """Passing the wall-clock ``now`` to tick does not make a retry due early."""
    r = Flaky(clock, failures=1)
    runner = ResponderRunner([r], clock, backoff=5.0)
    runner.submit(ban())
    runner.tick()
    clock.advance(1)
    assert runner.tick(clock.now()) == 0
    clock.advance(4)
    assert runner.tick(clock.now()) == 1
    assert r.done == [("add", "203.0.113.7")]


def test_backoff_doubles_up_to_the_cap(clock: FakeClock) -> None:
    """Retry delays are 1, 2, 4, 8 ... seconds, never more than ``backoff_cap``."""
    r = Flaky(clock, failures=100)
    runner = ResponderRunner([r], clock, max_attempts=8, backoff_cap=10.0)
    runner.submit(ban("203.0.113.7", ttl=86400))
    runner.tick()
    run_until(runner, clock, 120)
    times = [t for _, _, t in r.calls]
    assert [b - a for a, b in itertools.pairwise(times)] == [1, 2, 4, 8, 10, 10, 10]


def test_gives_up_after_max_attempts(clock: FakeClock) -> None:
    """After ``max_attempts`` failures the operation is dropped with an error log."""
    r = Flaky(clock, failures=100)
    runner = ResponderRunner([r], clock, max_attempts=3)
    with capture_logs() as logs:
        runner.submit(ban())
        runner.tick()
        run_until(runner, clock, 30)
    assert len(r.calls) == 3
    (stats,) = runner.stats()
    assert (stats.failed[Operation.ADD], stats.given_up[Operation.ADD], stats.pending) == (3, 1, 0)
    given_up = [e for e in logs if e["event"] == "responder operation given up"]
    assert len(given_up) == 1
    assert given_up[0]["log_level"] == "error"
    assert given_up[0]["target"] == "203.0.113.7"


def test_a_partial_failure_retries_only_the_failed_and_gives_up_the_refused(
    clock: FakeClock,
) -> None:
    """A commit naming its failed targets: the others count done, only the failed one is
    retried, the one refused for good is given up at once (not retried)."""
    r = Flaky(clock, failures=1)
    r.error = PartialError("partly", failed={"198.51.100.1"}, refused={"2001:db8::/64"})
    runner = ResponderRunner([r], clock)
    for target in ("2001:db8::/64", "198.51.100.1", "203.0.113.7"):
        runner.submit(ban(target))
    with capture_logs() as logs:
        runner.tick()
    run_until(runner, clock, 5)
    assert [arg for _, arg, _ in r.calls][1:] == [[("add", "198.51.100.1")]]
    (stats,) = runner.stats()
    assert (stats.ok[Operation.ADD], stats.failed[Operation.ADD]) == (2, 2)
    assert (stats.given_up[Operation.ADD], stats.pending) == (1, 0)
    given_up = [e for e in logs if e["event"] == "responder operation given up"]
    assert [(e["target"], e["reason"]) for e in given_up] == [
        ("2001:db8::/64", "refused by the backend")
    ]


def test_unenforced_names_given_up_bans_and_failing_responders(clock: FakeClock) -> None:
    """A ban whose add was given up, or whose responder's health check failed, is
    reported as not enforced (why, per responder); an add that later goes through
    clears it; other bans and simulated ones carry nothing."""
    r = Flaky(clock, failures=1)
    r.error = PartialError("partly", refused={"2001:db8::/64"})
    runner = ResponderRunner([r], clock)
    refused, fine = ban("2001:db8::/64"), ban("203.0.113.7")
    runner.submit(refused)
    runner.submit(fine)
    runner.tick()
    assert runner.unenforced(refused) == ["flaky: given up: refused by the backend"]
    assert runner.unenforced(fine) == []
    runner.submit(refused)  # IPv6 back on: the next add goes through
    runner.tick()
    assert runner.unenforced(refused) == []
    r.healthy = False
    runner.check_health()
    assert runner.unenforced(fine) == ["flaky: failing (health check raised: no nft binary)"]
    assert runner.unenforced(ban("203.0.113.7", simulated=True)) == []


def test_a_reconcile_that_only_met_refused_targets_is_not_retried(clock: FakeClock) -> None:
    """A reconcile whose only failures are refused for good counts as done."""
    r = Flaky(clock, failures=1)
    r.error = PartialError("partly", refused={"2001:db8::/64"})
    runner = ResponderRunner([r], clock)
    runner.reconcile([ban("2001:db8::/64"), ban("203.0.113.7")])
    runner.tick()
    run_until(runner, clock, 5)
    assert len(r.calls) == 1
    (stats,) = runner.stats()
    assert (stats.ok[Operation.RECONCILE], stats.pending) == (1, 0)


class Sliced(Flaky):
    """A reconcile made in ``slices`` slices: each but the last raises unfinished,
    refusing ``refused`` for good."""

    def __init__(self, clock: FakeClock, slices: int, refused: frozenset[str]) -> None:
        super().__init__(clock)
        self.slices, self.refused = slices, refused

    def reconcile(self, active: Sequence[Decision]) -> None:
        super().reconcile(active)
        self.slices -= 1
        if self.slices:
            raise ReconcileUnfinishedError("more to do", refused=self.refused)
        if self.refused:
            raise PartialError("partly", refused=self.refused)


def test_an_unfinished_reconcile_goes_on_at_once_after_the_bans_queued_meanwhile(
    clock: FakeClock,
) -> None:
    """A reconcile that made one slice is called again in the next cycle without back-off,
    after the ban queued meanwhile (in its active set too); it counts once, as ok, never
    failed or retried, and what it met refused stays marked."""
    r = Sliced(clock, slices=3, refused=frozenset({"2001:db8::/64"}))
    runner = ResponderRunner([r], clock)
    runner.reconcile([ban("203.0.113.7"), ban("2001:db8::/64")])
    runner.tick()
    assert runner.unenforced(ban("2001:db8::/64")) == ["flaky: given up: refused by the backend"]
    runner.submit(ban("198.51.100.1"))
    runner.tick()
    runner.tick()
    runner.tick()
    assert [(op, arg) for op, arg, _ in r.calls] == [
        ("reconcile", ["2001:db8::/64", "203.0.113.7"]),
        ("commit", [("add", "198.51.100.1")]),
        ("reconcile", ["198.51.100.1", "2001:db8::/64", "203.0.113.7"]),
        ("reconcile", ["198.51.100.1", "2001:db8::/64", "203.0.113.7"]),
    ]
    (stats,) = runner.stats()
    assert (stats.ok[Operation.RECONCILE], stats.failed[Operation.RECONCILE]) == (1, 0)
    assert (stats.retried[Operation.RECONCILE], stats.given_up[Operation.RECONCILE]) == (0, 1)
    assert stats.pending == 0
    assert runner.unenforced(ban("2001:db8::/64")) == ["flaky: given up: refused by the backend"]
    assert runner.unenforced(ban("203.0.113.7")) == []


def test_unexpected_exceptions_are_failures_too(clock: FakeClock) -> None:
    """A responder raising something other than ResponderError is logged and retried."""
    r = Flaky(clock, failures=1)
    r.error = KeyError("bug")
    runner = ResponderRunner([r], clock)
    with capture_logs() as logs:
        runner.submit(ban())
        runner.tick()
    assert any(e["event"] == "responder raised unexpectedly" for e in logs)
    assert r.discards == 1
    run_until(runner, clock, 2)
    assert r.done == [("add", "203.0.113.7")]


def test_one_broken_responder_does_not_hold_back_another(clock: FakeClock) -> None:
    """A healthy responder acts at once while a broken one waits for its retry."""
    good, bad = Flaky(clock, name="good"), Flaky(clock, failures=1, name="bad")
    runner = ResponderRunner([bad, good], clock)
    runner.submit(ban())
    runner.tick()
    assert good.done == [("add", "203.0.113.7")]
    assert bad.done == []
    assert [(s.name, s.pending) for s in runner.stats()] == [("bad", 1), ("good", 0)]


def test_delete_replaces_a_pending_add(clock: FakeClock) -> None:
    """A delete for a target whose add waits for retry replaces that add."""
    r = Flaky(clock, failures=1)
    runner = ResponderRunner([r], clock)
    runner.submit(ban())
    runner.tick()
    runner.submit_expired([ban()])
    run_until(runner, clock, 10)
    assert r.done == [("delete", "203.0.113.7")]
    assert runner.pending() == 0


def test_retry_of_an_expired_ban_is_dropped(clock: FakeClock) -> None:
    """An add still failing when its ban has run out is not retried any more."""
    r = Flaky(clock, failures=1)
    runner = ResponderRunner([r], clock, backoff=5.0)
    runner.submit(ban(ttl=3))
    runner.tick()
    run_until(runner, clock, 10)
    assert len(r.calls) == 1
    assert runner.pending() == 0


def test_reconcile_filters_and_retries_with_current_state(clock: FakeClock) -> None:
    """A retried reconcile includes later adds, excludes later deletes and expired bans."""
    r = Flaky(clock, failures=1)
    runner = ResponderRunner([r], clock, backoff=5.0)
    runner.reconcile([ban("198.51.100.1"), ban("198.51.100.2"), ban("198.51.100.3", ttl=2)])
    runner.tick()
    runner.submit(ban("198.51.100.9"))
    runner.submit_expired([ban("198.51.100.1")])
    runner.tick()
    run_until(runner, clock, 6)
    assert r.done == [
        ("add", "198.51.100.9"),
        ("delete", "198.51.100.1"),
        ("reconcile", ["198.51.100.2", "198.51.100.9"]),
    ]


def test_reconcile_replaces_queued_operations(clock: FakeClock) -> None:
    """A reconcile supersedes the responder's queued adds and deletes."""
    r = Flaky(clock, failures=1)
    runner = ResponderRunner([r], clock)
    runner.submit(ban("198.51.100.1"))
    runner.tick()
    assert runner.pending() == 1
    runner.submit(ban("198.51.100.2"))
    runner.reconcile([ban("198.51.100.1")])
    runner.submit(ban("198.51.100.3"))
    runner.tick()
    assert runner.pending() == 0
    assert r.done == [("reconcile", ["198.51.100.1", "198.51.100.3"])]
    assert runner.stats()[0].ok[Operation.RECONCILE] == 1


def test_a_reconcile_keeping_what_is_held_only_adds_and_queued_lifts_still_run(
    clock: FakeClock,
) -> None:
    """With keep_held (the ledger is not the whole truth this run) a reconcile is the
    responder's reconcile_adding: it lifts nothing unknown, and the lifts queued before
    and after it are not swallowed by it but run."""
    r = Flaky(clock)
    runner = ResponderRunner([r], clock)
    runner.keep_held = True
    runner.submit_expired([ban("198.51.100.1")])
    runner.reconcile([ban("198.51.100.2")])
    runner.submit_expired([ban("198.51.100.3")])
    runner.tick()
    assert r.done == [
        ("add", "198.51.100.2"),
        ("delete", "198.51.100.1"),
        ("delete", "198.51.100.3"),
    ]
    assert runner.stats()[0].ok[Operation.RECONCILE] == 1


def test_with_keep_held_a_ban_after_its_queued_lift_cancels_the_lift(clock: FakeClock) -> None:
    """With keep_held and a reconcile queued, a ban submitted after a lift of the same
    target cancels that lift: the target ends banned, not lifted after the reconcile."""
    r = Flaky(clock)
    runner = ResponderRunner([r], clock)
    runner.keep_held = True
    runner.reconcile([])
    runner.submit_expired([ban("198.51.100.1")])
    runner.submit(ban("198.51.100.1"))
    runner.tick()
    assert r.done == [("add", "198.51.100.1")]


def test_health_is_checked_by_tick(clock: FakeClock) -> None:
    """Tick records each responder's health; a raising check counts as unhealthy."""
    r = Flaky(clock)
    runner = ResponderRunner([r], clock, health_interval=30.0)
    runner.tick()
    assert runner.stats()[0].health == ResponderHealth(ok=True, detail="fine")
    r.healthy = False
    run_until(runner, clock, 29)
    assert runner.stats()[0].health == ResponderHealth(ok=True, detail="fine")
    with capture_logs() as logs:
        run_until(runner, clock, 1)
    health = runner.stats()[0].health
    assert health is not None
    assert not health.ok
    assert "no nft binary" in health.detail
    assert runner.stats()[0].health_checked_at == T0 + 30
    assert any(e["event"] == "responder health changed" for e in logs)


def test_unhealthy_at_the_first_check_is_logged_once(clock: FakeClock) -> None:
    """A responder unhealthy from its first health check gets one warning with the reason."""
    r = Flaky(clock)
    r.healthy = False
    runner = ResponderRunner([r], clock, health_interval=30.0)
    with capture_logs() as logs:
        run_until(runner, clock, 61)
    unhealthy = [e for e in logs if e["log_level"] == "warning"]
    assert len(unhealthy) == 1, logs
    assert unhealthy[0]["responder"] == "flaky"
    assert "no nft binary" in unhealthy[0]["detail"]


def test_withdraw_lifts_a_removed_responder_once_and_a_failure_is_logged_and_counted(
    clock: FakeClock,
) -> None:
    """withdraw() runs each removed responder's withdraw on the next cycle; a failing one
    gets one error line and aisentinel_responder_withdrawals_total{result="failed"}."""
    kept, gone, broken = Flaky(clock), Flaky(clock, name="gone"), Flaky(clock, name="broken")
    lifted: list[str] = []
    gone.withdraw = lambda: lifted.append("gone") or "lifted"  # type: ignore[method-assign]

    def fail() -> str:
        raise ResponderError("Operation not permitted")

    broken.withdraw = fail  # type: ignore[method-assign]
    runner = ResponderRunner([kept], clock)
    runner.withdraw([gone, broken])
    with capture_logs() as logs:
        runner.tick()
        runner.tick()
    assert lifted == ["gone"]
    assert gone.closed
    assert not broken.closed  # kept for its retry
    assert not kept.closed
    errors = [e for e in logs if e["log_level"] == "error" and "error" in e]
    assert [(e["responder"], e["error"]) for e in errors] == [("broken", "Operation not permitted")]
    samples = {
        (s.labels["responder"], s.labels["result"]): s.value
        for family in runner.collect()
        if family.name == "aisentinel_responder_withdrawals"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert samples == {("gone", "ok"): 1, ("broken", "failed"): 1}


def test_a_withdrawn_responder_gets_no_queued_operation_retry_or_health_check(
    clock: FakeClock,
) -> None:
    """After withdraw() a runner's own responder leaves the active set: its queued add, its
    due retry and its due health check never reach it, so nothing rebuilds what it lifted."""
    gone, kept = Flaky(clock, failures=1, name="gone"), Flaky(clock, name="kept")
    runner = ResponderRunner([gone, kept], clock)
    runner.submit(ban("198.51.100.1"))
    runner.tick()  # gone fails: its add waits for a retry; the first health check ran
    checked: list[str] = []
    gone.health = lambda: checked.append("gone") or ResponderHealth(ok=True)  # type: ignore[method-assign]
    gone.withdraw = lambda: gone.calls.clear() or "lifted"  # type: ignore[method-assign]
    clock.advance(120)  # the retry and the next health check are due
    runner.submit(ban("198.51.100.2"))  # queued before the withdrawal
    runner.withdraw([gone])
    runner.tick()
    runner.tick()
    assert gone.calls == []
    assert gone.done == []
    assert checked == []
    assert runner.pending() == 0
    assert ("add", "198.51.100.2") in kept.done


def test_a_failed_withdrawal_is_retried_with_backoff_and_reported_once_lifted(
    clock: FakeClock,
) -> None:
    """A failed withdrawal is not forgotten: it is retried after 1 s, 2 s ..., and
    on_lifted (the daemon then forgets the responder) is called only once it succeeded."""
    gone = Flaky(clock, name="gone")
    tries: list[float] = []

    def withdraw() -> str:
        tries.append(clock.monotonic())
        if len(tries) < 3:
            raise ResponderError("fail2ban-server not running")
        return "lifted"

    gone.withdraw = withdraw  # type: ignore[method-assign]
    lifted: list[Responder] = []
    runner = ResponderRunner([], clock)
    runner.withdraw([gone], on_lifted=lifted.append)
    assert runner.flush(1.0)  # tried once: the retry waits for its back-off
    assert lifted == []
    assert not gone.closed
    run_until(runner, clock, 10)
    assert [t - tries[0] for t in tries] == [0.0, 1.0, 3.0]
    assert lifted == [gone]
    assert gone.closed


def test_full_retry_queue_gives_up_at_once(clock: FakeClock) -> None:
    """When ``max_pending`` retries are queued, a further failure is given up."""
    r = Flaky(clock, failures=100)
    runner = ResponderRunner([r], clock, max_pending=2)
    for i in range(3):
        runner.submit(ban(f"198.51.100.{i}"))
        runner.tick()
    (stats,) = runner.stats()
    assert (stats.pending, stats.given_up[Operation.ADD]) == (2, 1)


def test_close_closes_all_and_drops_retries(clock: FakeClock) -> None:
    """Closing closes every responder even when one raises, and empties the queue."""
    a, b = Flaky(clock, failures=1, name="a"), Flaky(clock, name="b")
    runner = ResponderRunner([a, b], clock)
    runner.submit(ban())
    runner.tick()
    runner.submit(ban("198.51.100.1"))
    with capture_logs() as logs:
        runner.close()
    assert [e["count"] for e in logs if e["event"].endswith("dropped at shutdown")] == [2]
    assert a.closed
    assert b.closed
    assert runner.pending() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be at least 1"),
        ({"backoff": 0}, "backoff must be positive"),
        ({"backoff": 10, "backoff_cap": 5}, "backoff_cap at least backoff"),
    ],
)
def test_bad_settings_are_refused(clock: FakeClock, kwargs: dict[str, float], message: str) -> None:
    """Nonsensical retry settings are a ValueError at construction."""
    with pytest.raises(ValueError, match=message):
        ResponderRunner([], clock, **kwargs)  # type: ignore[arg-type]


def test_duplicate_responder_names_are_refused(clock: FakeClock) -> None:
    """Two responders with one name would share counters and queue keys: refused."""
    with pytest.raises(ValueError, match="repeated: x"):
        ResponderRunner([Flaky(clock, name="x"), Flaky(clock, name="x")], clock)


def _counted(runner: ResponderRunner) -> dict[str, tuple[int, int, int, int]]:
    """Per responder: failed and given-up adds, failed batches, repairs (as exported)."""
    return {
        s.name: (s.failed[Operation.ADD], s.given_up[Operation.ADD], s.batches["failed"], s.repairs)
        for s in runner.stats()
    }


def test_counters_go_on_across_replaced_runners_for_kept_and_re_added_responders(
    clock: FakeClock,
) -> None:
    """A runner replacing another at a reload (carry_over) goes on counting each
    responder's operations and repairs from where it was, also for one removed at a
    reload and added again at a later one: the counters never go back."""
    a, b = Flaky(clock, failures=100, name="a"), Flaky(clock, failures=100, name="b")
    first = ResponderRunner([a, b], clock, max_attempts=1)
    first.submit(ban())
    first.tick()
    a.repairs, b.repairs = 2, 3
    assert _counted(first) == {"a": (1, 1, 1, 2), "b": (1, 1, 1, 3)}
    first.close()
    second = ResponderRunner([Flaky(clock, failures=100, name="a")], clock, max_attempts=1)
    second.carry_over(first)  # b removed
    assert _counted(second) == {"a": (1, 1, 1, 2)}
    second.submit(ban("198.51.100.1"))
    second.tick()
    assert _counted(second) == {"a": (2, 2, 2, 2)}
    second.close()
    third = ResponderRunner([Flaky(clock, name="a"), Flaky(clock, name="b")], clock)
    third.carry_over(second)  # b added again
    assert _counted(third) == {"a": (2, 2, 2, 2), "b": (1, 1, 1, 3)}


def _enabled(runner: ResponderRunner) -> list[float]:
    """The samples of ``aisentinel_responders_enabled`` in one collect."""
    return [
        sample.value
        for family in runner.collect()
        if family.name == "aisentinel_responders_enabled"
        for sample in family.samples
    ]


def test_responders_enabled_is_zero_when_nothing_is_enforced(clock: FakeClock) -> None:
    """aisentinel_responders_enabled counts the responders (0 with none: `aisentinel
    status` says nothing is enforced, alert AisentinelNotEnforcing)."""
    assert _enabled(ResponderRunner([], clock)) == [0]
    assert _enabled(ResponderRunner([Flaky(clock, name="a"), Flaky(clock, name="b")], clock)) == [2]
