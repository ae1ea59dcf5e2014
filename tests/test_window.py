"""Bounded sliding-window stores used by every detector."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest

from aisentinel.detectors import window
from aisentinel.detectors.window import (
    ONE_HIT_AFTER,
    ONE_HIT_MIN_THRESHOLD,
    DistinctWindows,
    EventWindows,
    MultiEventWindows,
    RateWindows,
    RecentSet,
)

T0 = 1_764_000_000.0


def test_event_windows_crosses_at_threshold_within_window() -> None:
    """The threshold-th event within the window crosses, not earlier."""
    win = EventWindows(3, 60.0, 10)
    assert win.hit("a", T0) is None
    assert win.hit("a", T0 + 10) is None
    crossing = win.hit("a", T0 + 20)
    assert crossing is not None
    assert crossing.events == 3
    assert crossing.first_ts == T0


def test_event_windows_spread_beyond_window_does_not_cross() -> None:
    """Events further apart than the window never add up to a crossing."""
    win = EventWindows(3, 60.0, 10)
    for i in range(10):
        assert win.hit("a", T0 + i * 31) is None


def test_event_windows_slides() -> None:
    """Old events fall out of the window; recent ones still count."""
    win = EventWindows(3, 60.0, 10)
    win.hit("a", T0)
    win.hit("a", T0 + 50)
    assert win.hit("a", T0 + 70) is None  # T0 fell out
    assert win.hit("a", T0 + 80) is not None  # 50, 70, 80


def test_event_windows_refires_at_most_once_per_window() -> None:
    """A continuing attack crosses once, then again only after a full window."""
    win = EventWindows(2, 60.0, 10)
    fired = [t for t in range(0, 300, 5) if win.hit("a", T0 + t) is not None]
    assert fired == [5, 65, 125, 185, 245]


def test_event_windows_refire_counts_events_since_previous() -> None:
    """A re-fire reports every event since the previous crossing."""
    win = EventWindows(2, 60.0, 10)
    crossings = [win.hit("a", T0 + t) for t in range(0, 70, 5)]
    found = [c for c in crossings if c is not None]
    assert [c.events for c in found] == [2, 12]


def test_event_windows_keys_are_independent() -> None:
    """Each key has its own window (IPv4 and IPv6 alike)."""
    win = EventWindows(2, 60.0, 10)
    assert win.hit("192.0.2.1", T0) is None
    assert win.hit("2001:db8::1", T0) is None
    assert win.hit("2001:db8::1", T0 + 1) is not None


def test_event_windows_lru_cap_evicts_least_recent() -> None:
    """At max_keys the least recently seen key is dropped first."""
    win = EventWindows(2, 60.0, 2)
    win.hit("a", T0)
    win.hit("b", T0)
    win.hit("a", T0 + 1)  # crosses; a is now most recent
    win.hit("c", T0 + 2)  # evicts b
    assert len(win) == 2
    assert "b" not in win
    assert "a" in win
    assert win.evicted == 1


def test_event_windows_expire_drops_idle_keys_only() -> None:
    """expire() drops keys idle for longer than the window and reports how many."""
    win = EventWindows(3, 60.0, 10)
    win.hit("old", T0)
    win.hit("new", T0 + 50)
    assert win.expire(T0 + 100) == 1
    assert "new" in win
    assert "old" not in win


def test_event_windows_gap_starts_new_episode() -> None:
    """After a gap longer than the window the count starts again."""
    win = EventWindows(2, 60.0, 10)
    win.hit("a", T0)
    win.hit("a", T0 + 1000)
    crossing = win.hit("a", T0 + 1001)
    assert crossing is not None
    assert crossing.events == 2
    assert crossing.first_ts == T0 + 1000


def test_event_windows_evidence_is_distinct_and_bounded() -> None:
    """Evidence holds at most evidence_max distinct samples."""
    win = EventWindows(10, 60.0, 10, evidence_max=3)
    crossing = None
    for i in range(10):
        crossing = win.hit("a", T0 + i, f"user{i % 5}")
    assert crossing is not None
    assert crossing.evidence == ("user0", "user1", "user2")


def test_threshold_one_fires_on_first_event() -> None:
    """threshold 1 crosses on the first event and then stays quiet for the window."""
    win = EventWindows(1, 60.0, 10)
    assert win.hit("a", T0) is not None
    assert win.hit("a", T0 + 30) is None
    assert win.hit("a", T0 + 61) is not None


@pytest.mark.parametrize(
    ("threshold", "window", "max_keys"), [(0, 1.0, 1), (1, 0.0, 1), (1, 1.0, 0)]
)
def test_stores_reject_nonsense_limits(threshold: int, window: float, max_keys: int) -> None:
    """Zero thresholds, windows or capacities are programming errors."""
    with pytest.raises(ValueError, match="must be"):
        EventWindows(threshold, window, max_keys)
    with pytest.raises(ValueError, match="must be"):
        RateWindows(threshold, window, max_keys)
    with pytest.raises(ValueError, match="must be"):
        DistinctWindows(threshold, window, max_keys)


def test_rate_windows_exact_within_first_bucket() -> None:
    """A burst within one window of the first event crosses exactly at the threshold."""
    rate = RateWindows(100, 60.0, 10)
    results = [rate.hit("a", T0 + i * 0.5) for i in range(100)]
    assert all(r is None for r in results[:99])
    assert results[99] is not None
    assert results[99].events == 100


def test_rate_windows_steady_rate_below_limit_never_crosses() -> None:
    """A steady rate below the threshold never crosses across bucket boundaries."""
    rate = RateWindows(100, 60.0, 10)
    assert all(rate.hit("a", T0 + i) is None for i in range(600))  # 60 a minute


def test_rate_windows_steady_rate_above_limit_crosses_once_per_window() -> None:
    """A steady rate above the threshold crosses, then once per window."""
    rate = RateWindows(100, 60.0, 10)
    fired = [i for i in range(1200) if rate.hit("a", T0 + i * 0.25) is not None]  # 240/min
    assert len(fired) == 5
    assert fired[0] == 99


def test_rate_windows_expire_and_cap() -> None:
    """Keys idle for two buckets go; a full table first drops the previous bucket, then
    counts new keys from the next bucket on."""
    rate = RateWindows(2, 60.0, 2)
    rate.hit("a", T0)
    rate.hit("b", T0 + 30)
    assert rate.hit("c", T0 + 31) is None
    assert rate.hit("c", T0 + 32) is None  # not counted: the bucket's table is full
    assert "c" not in rate
    assert len(rate) == 2
    assert rate.overflow == 2
    assert rate.hit("c", T0 + 61) is None  # a new bucket: full with a and b held in prev
    assert "a" not in rate  # so the previous bucket was dropped early
    assert rate.hit("c", T0 + 62) is not None
    assert len(rate) == 1
    rate.hit("d", T0 + 63)
    assert len(rate) == 2
    assert rate.expire(T0 + 120.5) == 0  # c and d move to the previous bucket
    assert rate.expire(T0 + 180.5) == 2
    assert len(rate) == 0


def test_rate_windows_crossing_span_starts_at_the_keys_first_event() -> None:
    """A burst inside one bucket (none in the previous one) crosses with first_ts the
    time of its first event, not the bucket's start: 20 hits in one second span 0s."""
    rate = RateWindows(20, 60.0, 10)
    rate.hit("other", T0 + 1)
    hits = [rate.hit("a", T0 + 57) for _ in range(20)]
    crossing = hits[-1]
    assert crossing is not None
    assert (crossing.events, crossing.first_ts) == (20, T0 + 57)
    spread = RateWindows(3, 60.0, 10)
    assert spread.hit("b", T0 + 10) is None
    assert spread.hit("b", T0 + 30) is None
    late = spread.hit("b", T0 + 40)
    assert late is not None
    assert late.first_ts == T0 + 10


def test_rate_windows_crossing_span_in_a_busy_bucket() -> None:
    """In a bucket already holding ONE_HIT_AFTER keys (the one-hit filter takes each new
    key's first event), a burst in one second still spans 0s, not from the bucket's start."""
    rate = RateWindows(20, 60.0, 1_000_000)
    assert rate.one_hit
    for i in range(ONE_HIT_AFTER + 5):
        rate.hit(f"c{i}", T0 + 1)
    hits = [rate.hit("attacker", T0 + 57) for _ in range(21)]
    crossing = next(c for c in hits if c is not None)
    assert crossing.first_ts == T0 + 57


def test_rate_windows_estimate_weights_the_previous_bucket() -> None:
    """Across a bucket boundary the estimate is cur + prev * overlap (buckets aligned
    to the window), so a burst straddling the boundary is reported once the weighted
    count reaches the threshold."""
    rate = RateWindows(100, 60.0, 10)
    for i in range(60):
        assert rate.hit("a", T0 + 30 + i * 0.5) is None  # 60 in [T0, T0 + 60)
    # At T0 + 75 the previous bucket overlaps the window by 3/4: 60 * 0.75 = 45.
    results = [rate.hit("a", T0 + 75) for _ in range(56)]
    assert all(r is None for r in results[:54])
    crossing = results[54]  # the 55th: 55 + 45 = 100
    assert crossing is not None
    assert crossing.events == 100
    assert crossing.first_ts == T0 + 15  # the window ending at the crossing
    assert results[55] is None  # quiet for a window


def test_rate_windows_idle_window_empties_both_buckets() -> None:
    """After a whole idle bucket, the old counts no longer weigh in."""
    rate = RateWindows(10, 60.0, 10)
    for i in range(9):
        rate.hit("a", T0 + 50 + i)
    assert rate.hit("a", T0 + 125) is None  # two buckets later: only 1 counted
    assert rate.hit("a", T0 + 126) is None
    assert len(rate) == 1


def test_rate_windows_a_backlog_is_counted_in_its_own_buckets() -> None:
    """Housekeeping at wall-clock time while a backlog an hour old is read does not move
    the store (events came since its last call): a client under the rate is never
    reported, one over it is; an idle store is turned over by the housekeeping."""
    rate = RateWindows(100, 60.0, 10)
    wall = T0 + 3600
    rate.expire(wall)
    fired = []
    for i in range(1800):
        if i % 10 == 0:
            rate.expire(wall + i / 100)  # the daemon's tick, every 10 events here
        assert rate.hit("a", T0 + i) is None  # 60 a minute
        crossed = [rate.hit("b", T0 + i + half) for half in (0.25, 0.75)]  # 120 a minute
        if any(c is not None for c in crossed):
            fired.append(i)
    assert fired[0] == 49  # its 100th request, then once a window
    assert len(fired) >= 25
    assert (rate.rewinds, rate.late) == (0, 0)
    assert rate.expire(wall + 100) == 0  # events came since the last call: kept
    assert rate.expire(wall + 200) == 2  # idle since: turned over to the wall clock


def test_rate_windows_a_source_behind_by_more_than_a_window_does_not_disturb_the_rest() -> None:
    """With the wall clock known, events of a source an hour behind are not counted
    (late): a live attack interleaved with them still crosses, and the lagging
    client's hour of requests is never summed into one bucket."""
    rate = RateWindows(100, 60.0, 10)
    live = T0 + 3600
    rate.expire(live)
    fired = []
    for i in range(800):
        for j in range(5):
            assert rate.hit("busy", T0 + i + j * 0.2) is None  # the lagging source
        if rate.hit("attacker", live + i * 0.2) is not None:  # 300 a minute, live
            fired.append(i)
        if i % 50 == 0:
            rate.expire(live + i * 0.2)
    assert fired
    assert fired[0] == 99
    assert rate.late > 0
    assert rate.rewinds == 0


def test_rate_windows_recover_from_a_future_stamp() -> None:
    """A line stamped a day ahead moves the store; the events after it are late until
    the next housekeeping, which goes back to the wall clock; replay (no wall clock)
    goes back at the next event instead."""
    rate = RateWindows(100, 60.0, 10)
    rate.expire(T0)
    assert rate.hit("z", T0 + 86_400) is None
    assert rate.hit("a", T0 + 1) is None
    assert rate.late == 1
    rate.expire(T0 + 2)
    assert rate.rewinds == 1
    fired = [i for i in range(200) if rate.hit("b", T0 + 3 + i * 0.25) is not None]
    assert fired == [99]
    replay = RateWindows(100, 60.0, 10)
    replay.hit("z", T0 + 86_400)
    assert all(replay.hit("a", T0 + i) is None for i in range(1800))  # 60 a minute
    assert (replay.rewinds, replay.late) == (1, 0)
    late = RateWindows(100, 60.0, 10)
    late.hit("a", T0 + 120)
    late.hit("a", T0 + 61)  # within the previous bucket: counted in the current one
    assert (late.rewinds, late.late, late._cur["a"]) == (0, 0, 2)


def test_rate_windows_release_lets_the_next_hit_cross() -> None:
    """release() ends the quiet period of a key that crossed."""
    rate = RateWindows(2, 60.0, 10)
    rate.hit("a", T0)
    assert rate.hit("a", T0 + 1) is not None
    assert rate.hit("a", T0 + 2) is None
    rate.release("a")
    assert rate.hit("a", T0 + 3) is not None


def test_rate_windows_one_hit_keys_take_no_entry() -> None:
    """With a threshold of 8 or more, once the bucket holds ONE_HIT_AFTER keys, a key's
    first event takes no table entry: of 100,000 one-request clients, the first
    ONE_HIT_AFTER and a few percent more (filter collisions) are held."""
    rate = RateWindows(ONE_HIT_MIN_THRESHOLD, 60.0, 200_000)
    for i in range(100_000):
        assert rate.hit(f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", T0 + i * 0.0005) is None
    assert ONE_HIT_AFTER <= len(rate) < ONE_HIT_AFTER + 10_000
    assert rate.overflow == 0
    exact = RateWindows(ONE_HIT_MIN_THRESHOLD - 1, 60.0, 200_000)
    for i in range(10_000):
        exact.hit(f"k{i}", T0)
    assert len(exact) == 10_000  # below the filter's threshold every key is held


def test_rate_windows_one_hit_filter_keeps_counts() -> None:
    """A key counted through the filter crosses on the same event as an exact count,
    and the filter starts empty in each new bucket."""
    rate = RateWindows(10, 60.0, 3 * ONE_HIT_AFTER)

    def fill(ts: float) -> None:
        for i in range(ONE_HIT_AFTER):
            rate.hit(f"fill-{i}", ts)
            rate.hit(f"fill-{i}", ts)

    fill(T0)
    results = [rate.hit("a", T0 + i) for i in range(10)]
    assert results[:9] == [None] * 9
    assert results[9] is not None
    assert results[9].events == 10
    assert "b" not in rate
    rate.hit("b", T0 + 20)
    assert "b" not in rate  # one event: in the filter only
    rate.hit("b", T0 + 21)
    assert "b" in rate
    rate.hit("c", T0 + 59)
    fill(T0 + 60)
    rate.hit("c", T0 + 61)  # a new bucket: c's first event there again
    assert "c" not in rate


def test_rate_windows_one_hit_keys_do_not_fill_the_table() -> None:
    """A flood of one-request addresses leaves room under max_keys for a repeat client."""
    rate = RateWindows(10, 60.0, 5000)
    for i in range(50_000):
        rate.hit(f"flood-{i}", T0 + i * 0.001)
    found = [rate.hit("heavy", T0 + 55 + i * 0.1) for i in range(10)]
    # Its tenth request crosses; its first may share a flood key's bit in the one-hit
    # filter (string hashes vary per process), counting from 2 and crossing at the ninth.
    crossed = [i for i, crossing in enumerate(found) if crossing is not None]
    assert crossed in ([9], [8])


def test_distinct_windows_hold_the_callers_time_object() -> None:
    """A key's list keeps the event's own float object, not a copy (which the compiled
    build made per key: one more object per client held)."""
    dist = DistinctWindows(3, 60.0, 10)
    first, second = T0 + 0.25, T0 + 1.25
    dist.hit("ip", "root", first)
    dist.hit("ip", "admin", second)
    state = dist._keys["ip"]
    assert isinstance(state, list)
    assert state[:4] == [float("-inf"), first, "root", first]
    assert any(x is second for x in state)


def test_distinct_windows_crosses_on_distinct_values_only() -> None:
    """Repeating one value never crosses; enough distinct ones within the window do."""
    dist = DistinctWindows(3, 60.0, 10)
    assert all(dist.hit("ip", "root", T0 + i) is None for i in range(20))
    assert dist.hit("ip", "admin", T0 + 21) is None
    crossing = dist.hit("ip", "oracle", T0 + 22)
    assert crossing is not None
    assert set(crossing.evidence) == {"root", "admin", "oracle"}
    assert crossing.events == 3


def test_distinct_windows_values_outside_window_do_not_count() -> None:
    """Distinct values seen longer ago than the window are not counted."""
    dist = DistinctWindows(3, 60.0, 10)
    dist.hit("ip", "u1", T0)
    dist.hit("ip", "u2", T0 + 10)
    assert dist.hit("ip", "u3", T0 + 65) is None


def test_distinct_windows_bounded_per_key() -> None:
    """A key holds at most threshold + margin values whatever the attacker rotates."""
    dist = DistinctWindows(3, 1.0, 10, margin=2)
    for i in range(1000):
        dist.hit("ip", f"user{i}", T0 + i * 10)  # never crosses: 1 value per window
    state = dist._keys["ip"]  # [quiet, queued, value, seen, ...]
    assert (len(state) - 2) // 2 <= 5


def test_distinct_windows_release_allows_next_hit_to_cross() -> None:
    """release() ends the quiet period so the next hit reports again."""
    dist = DistinctWindows(2, 60.0, 10)
    dist.hit("k", "a", T0)
    assert dist.hit("k", "b", T0 + 1) is not None
    assert dist.hit("k", "c", T0 + 2) is None
    dist.release("k")
    assert dist.hit("k", "d", T0 + 3) is not None


def test_distinct_windows_expire() -> None:
    """Idle distinct-value keys are expired."""
    dist = DistinctWindows(3, 60.0, 10)
    dist.hit("a", "x", T0)
    dist.hit("b", "x", T0 + 100)
    assert dist.expire(T0 + 120) == 1
    assert len(dist) == 1


def test_recent_set_ttl_and_cap() -> None:
    """RecentSet remembers keys for ttl seconds and holds at most max_keys."""
    seen = RecentSet(100.0, 2)
    seen.add("a", T0)
    assert seen.seen("a", T0 + 100)
    assert not seen.seen("a", T0 + 101)
    seen.add("b", T0 + 1)
    seen.add("c", T0 + 2)
    assert len(seen) == 2
    assert not seen.seen("a", T0 + 3)
    assert seen.expire(T0 + 101.5) == 1


def test_second_chance_keeps_every_key_seen_since_the_victim_was_queued() -> None:
    """When full, the key evicted had no newer event since it was queued, and every key
    with a newer event since then is kept (whatever the store)."""
    win = EventWindows(5, 600.0, 4)
    for i, key in enumerate("abcd"):
        win.hit(key, T0 + i)  # queue: a b c d
    win.hit("a", T0 + 10)
    win.hit("c", T0 + 11)
    win.hit("e", T0 + 12)  # a re-queued, b evicted
    assert "b" not in win
    assert all(k in win for k in "acde")
    win.hit("f", T0 + 13)  # c re-queued, d evicted
    assert "d" not in win
    assert all(k in win for k in "acef")
    assert win.evicted == 2


def test_second_chance_is_not_exact_lru() -> None:
    """The documented approximation: a key re-queued late can outlive one seen after it."""
    seen = RecentSet(1000.0, 3)
    seen.add("a", T0)
    seen.add("b", T0 + 1)
    seen.add("a", T0 + 2)  # a has a newer event than when it was queued
    seen.add("c", T0 + 3)
    seen.add("d", T0 + 4)  # a re-queued behind c, b evicted: queue c a d
    seen.add("c", T0 + 5)  # the least recently seen is now a
    seen.add("e", T0 + 6)  # c re-queued; a (seen at T0 + 2, not since re-queued) goes
    assert "a" not in seen
    assert all(k in seen for k in "cde")
    seen.add("f", T0 + 7)  # d: queued at T0 + 4 and not seen since, goes before c
    assert "d" not in seen
    assert all(k in seen for k in "cef")


def test_a_one_key_table_replaces_its_key() -> None:
    """max_keys = 1 evicts the only key even when it was seen again."""
    dist = DistinctWindows(3, 60.0, 1)
    dist.hit("a", "x", T0)
    dist.hit("a", "y", T0 + 1)
    dist.hit("b", "x", T0 + 2)
    assert len(dist) == 1
    assert dist.evicted == 1
    assert dist.hit("b", "y", T0 + 3) is None


def test_expire_requeues_live_keys_and_drops_idle_ones_behind_them() -> None:
    """expire() gives a second chance to keys seen since queued and drops idle keys
    behind them in the same call."""
    win = EventWindows(3, 60.0, 10)
    win.hit("a", T0)
    win.hit("b", T0 + 1)
    win.hit("a", T0 + 100)
    assert win.expire(T0 + 120) == 1  # a re-queued (live), b dropped
    assert "a" in win
    assert "b" not in win
    assert win.expire(T0 + 161) == 1
    assert len(win) == 0
    dist = DistinctWindows(3, 60.0, 10)
    dist.hit("a", "x", T0)
    dist.hit("b", "x", T0 + 1)
    dist.hit("a", "y", T0 + 100)
    assert dist.expire(T0 + 120) == 1
    assert len(dist) == 1
    assert dist.expire(T0 + 161) == 1


def test_dropped_slots_are_reused() -> None:
    """Expired keys free their slots: the state array does not grow with key churn."""
    win = EventWindows(10, 60.0, 100)
    for round_ in range(5):
        base = T0 + round_ * 1000
        for i in range(50):
            win.hit(f"k{round_}-{i}", base)
        win.expire(base + 500)
    # each round expires before the next one starts
    assert len(win._data) == 50 * win._stride  # type: ignore[attr-defined]


def test_evidence_samples_are_held_once_across_keys() -> None:
    """The same sample sent by many addresses is stored as one interned string."""
    win = EventWindows(2, 60.0, 100)
    for i in range(3):
        win.hit(f"10.0.0.{i}", T0, "".join(["/.e", "nv"]))  # a fresh string object each time
    held = [win._evidence._data[f"10.0.0.{i}"] for i in range(3)]  # type: ignore[attr-defined]
    assert held[0] == "/.env"
    assert held[0] is held[1] is held[2]


def test_evidence_keeps_the_most_recently_hit_keys() -> None:
    """When the evidence table is full, the key hit longest ago loses its samples first."""
    win = EventWindows(3, 60.0, 100, evidence_keys=2)
    win.hit("a", T0, "a1")
    win.hit("b", T0, "b1")
    win.hit("a", T0 + 1, "a2")  # a is now the most recent
    win.hit("c", T0 + 2, "c1")  # evicts b's samples, not a's
    crossing = win.hit("a", T0 + 3, "a3")
    assert crossing is not None
    assert crossing.evidence == ("a1", "a2", "a3")
    assert win.hit("b", T0 + 4, "b2") is None
    crossing = win.hit("b", T0 + 5, "b3")
    assert crossing is not None
    assert crossing.evidence == ("b2", "b3")


def test_distinct_windows_can_intern_values() -> None:
    """With intern_values, a username tried from many addresses is held once."""
    win = DistinctWindows(3, 60.0, 100, intern_values=True)
    for i in range(3):
        win.hit(f"10.0.0.{i}", "".join(["ro", "ot"]), T0)
    # one value each: held in single-value slots
    values = [win._one_values[win._keys[f"10.0.0.{i}"]] for i in range(3)]  # type: ignore[index]
    assert values[0] == "root"
    assert values[0] is values[1] is values[2]


@pytest.mark.parametrize("threshold", [3, 4, 5, 10, 20])
def test_spill_layout_counts_like_the_plain_one(
    threshold: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A table whose rings live apart (threshold above 2) reports the same crossings,
    keys and evictions as one with every ring in its slot, out-of-order times included."""
    rng = random.Random(threshold)
    spilled = EventWindows(threshold, 60.0, 40)
    monkeypatch.setattr(window, "_SPILL_ABOVE", 1000)
    plain = EventWindows(threshold, 60.0, 40)
    assert spilled._spill is not None  # type: ignore[attr-defined]
    assert plain._spill is None  # type: ignore[attr-defined]
    now = T0
    for step in range(20_000):
        now += rng.choice((0.0, 0.5, 3.0, 20.0, 90.0))
        ts = now - rng.choice((0.0, 0.0, 0.0, 30.0, 200.0))  # some events arrive late
        key = f"10.0.0.{rng.randrange(60)}"
        roll = rng.random()
        if roll < 0.01:
            spilled.clear(key)
            plain.clear(key)
        elif roll < 0.02:
            assert spilled.expire(now) == plain.expire(now)
        else:
            sample = f"u{rng.randrange(8)}"
            assert spilled.hit(key, ts, sample) == plain.hit(key, ts, sample), step
        assert len(spilled) == len(plain)
    assert spilled.evicted == plain.evicted > 0


def test_one_or_two_events_take_no_ring() -> None:
    """Keys with one or two events keep them in their slot (5 doubles), whatever the
    threshold; the third event gives the key a block (count, first, quiet and the
    ring), freed for reuse when it goes."""
    win = EventWindows(20, 60.0, 1000)
    for i in range(100):
        win.hit(f"k{i}", T0)
        win.hit(f"k{i}", T0 + 1)
    assert len(win._data) == 100 * 5  # type: ignore[attr-defined]
    assert len(win._spill) == 0  # type: ignore[attr-defined, arg-type]
    for i in range(10):
        win.hit(f"k{i}", T0 + 2)
    assert len(win._spill) == 10 * (3 + 20)  # type: ignore[attr-defined, arg-type]
    win.expire(T0 + 61.5)  # k10..k99 (newest T0 + 1) go; k0..k9 stay
    assert len(win) == 10
    win.expire(T0 + 63)
    assert len(win) == 0
    for i in range(10):
        for j in range(3):
            win.hit(f"again{i}", T0 + 100 + j)
    # the freed blocks were reused
    assert len(win._spill) == 10 * (3 + 20)  # type: ignore[attr-defined, arg-type]


def test_distinct_windows_one_value_keys_are_compact_until_their_second() -> None:
    """A key with one value has a single-value slot (kept by second chance, expired,
    never crossing); its second distinct value turns it into the list that counts."""
    dist = DistinctWindows(2, 60.0, 2)
    assert dist.hit("a", "x", T0) is None
    assert dist.hit("b", "x", T0 + 1) is None
    assert dist.hit("a", "x", T0 + 2) is None  # same value again: still one
    assert isinstance(dist._keys["a"], int)
    dist.hit("c", "x", T0 + 3)  # full: "a" (hit again since queued) gets a second chance
    assert "a" in dist._keys
    assert "b" not in dist._keys
    crossing = dist.hit("a", "y", T0 + 4)
    assert crossing is not None
    assert crossing.evidence == ("x", "y")
    assert isinstance(dist._keys["a"], list)
    assert dist.expire(T0 + 63.5) == 1  # "c" (T0 + 3) goes, "a" (T0 + 4) stays
    assert len(dist) == 1


def test_distinct_windows_single_value_slots_are_reused() -> None:
    """Slots of single-value keys that went (expired, evicted, or given a second
    value) are reused: a flood of one-value keys in waves holds one wave's slots."""
    dist = DistinctWindows(3, 60.0, 1000)
    for wave in range(5):
        start = T0 + wave * 100
        for i in range(200):
            dist.hit(f"w{wave}-{i}", "root", start)
        dist.hit(f"w{wave}-0", "admin", start + 1)  # a list now: its slot is free
        assert dist.expire(start + 99) == 200  # the wave idles past the window
        assert len(dist) == 0
    assert len(dist._one_values) == 200
    assert len(dist._one_times) == 400
    full = DistinctWindows(3, 60.0, 10)
    for i in range(100):
        full.hit(f"k{i}", "root", T0 + i)
    assert full.evicted == 90
    assert len(full._one_values) == 10
    assert [full._one_values[s] for s in full._keys.values()] == ["root"] * 10


def test_distinct_windows_single_value_times_go_with_their_key() -> None:
    """A single-value key's last-seen and queued times become its list's on its second
    value, so a key seen again after it was queued is requeued, not evicted."""
    dist = DistinctWindows(3, 60.0, 2)
    dist.hit("a", "x", T0)
    dist.hit("b", "x", T0 + 1)
    dist.hit("a", "x", T0 + 5)  # seen again since queued (T0)
    dist.hit("a", "y", T0 + 6)
    state = dist._keys["a"]
    assert isinstance(state, list)
    assert state[:4] == [float("-inf"), T0, "x", T0 + 5]
    dist.hit("c", "x", T0 + 7)  # full: "a" has newer values than its queued time
    assert "a" in dist._keys
    assert "b" not in dist._keys


def test_stores_share_one_int_object_per_slot_number() -> None:
    """Every store's index holds the pooled slot objects: 4 stores x 500 keys, 500 int objects."""
    stores = [
        EventWindows(5, 60.0, 10_000),
        EventWindows(2, 60.0, 10_000),
        RecentSet(60.0, 10_000),
        window.MultiEventWindows([(3, 60.0), (10, 600.0)], 10_000),
    ]
    for store in stores:
        for i in range(500):
            if isinstance(store, RecentSet):
                store.add(f"k{i}", 1.0)
            else:
                store.hit(f"k{i}", 1.0)
    held = {id(slot) for store in stores for slot in store._keys.values()}
    assert len(held) == 500


class _NaiveWindows:
    """EventWindows' definition without its storage: every time of every key kept."""

    def __init__(self, threshold: int, window: float) -> None:
        self.threshold = threshold
        self.window = window
        self.keys: dict[str, tuple[list[float], list[float]]] = {}

    def clear(self, key: str) -> None:
        self.keys.pop(key, None)

    def hit(self, key: str, ts: float) -> tuple[int, float] | None:
        times, state = self.keys.setdefault(key, ([], [float("-inf"), 0.0, ts]))
        quiet, count, first = state
        if times and ts - times[-1] > self.window:  # a gap starts a new episode
            count, first = 0.0, ts
        count += 1
        times.append(ts)
        t = self.threshold
        crossed = len(times) >= t and ts - times[-t] <= self.window and ts >= quiet
        if crossed:
            state[:] = [ts + self.window, 0.0, ts]
            return int(count), first
        state[:] = [quiet, count, first]
        return None


def test_event_windows_match_a_naive_model() -> None:
    """On random sequences (gaps, ties, out-of-order times, clears; thresholds 1-25, both
    slot layouts) every hit crosses exactly when the naive definition does, with its count
    and first time."""
    crossings = 0
    for seed in range(300):
        rng = random.Random(seed)
        threshold = rng.choice((1, 2, 3, 4, 5, rng.randint(1, 25)))
        window = float(rng.choice((5, 20, 60, 300)))
        store = EventWindows(threshold, window, 10_000)
        naive = _NaiveWindows(threshold, window)
        keys = [f"10.0.0.{i}" for i in range(rng.randint(1, 6))]
        ts = 0.0
        for _ in range(rng.randint(50, 400)):
            roll = rng.random()
            key = rng.choice(keys)
            if roll < 0.03:
                store.clear(key)
                naive.clear(key)
                continue
            if roll < 0.08:
                ts += rng.uniform(30, 400)
            elif roll < 0.2:
                ts -= rng.uniform(0, 4)
            else:
                ts += rng.choice((0.0, rng.uniform(0, 3)))
            got = store.hit(key, ts)
            want = naive.hit(key, ts)
            assert (None if got is None else (got.events, got.first_ts)) == want, (seed, key)
            crossings += want is not None
    assert crossings > 1000


def _flood_then_live(store: Any, hit: Any, live: int, flood: int) -> list[Any]:
    """Feed ``flood`` keys three events each at t=0-2 and ``live`` keys 0-6 events at
    t=950-955, expire at t=1000 (the flood goes) and at t=1052.5 (the live keys last
    seen before t=952.5 go); the keys left and the answers of each live key's next
    eight events (t=960-967)."""
    for i in range(flood):
        for t in range(3):
            hit(store, f"f{i}", float(t), i)
    for j in range(live):
        for t in range(j % 7):
            hit(store, f"k{j}", 950.0 + t, j + t)
    store.expire(1000.0)
    store.expire(1052.5)
    left = len(store)
    return [left] + [
        hit(store, f"k{j}", 960.0 + t, j * 3 + t) for t in range(8) for j in range(live)
    ]


@pytest.mark.parametrize(
    ("make", "hit"),
    [
        (lambda: EventWindows(5, 100.0, 100_000), lambda s, k, t, v: s.hit(k, t, f"s{v}")),
        (lambda: EventWindows(2, 100.0, 100_000), lambda s, k, t, v: s.hit(k, t)),
        (
            lambda: MultiEventWindows([(3, 50.0), (6, 100.0)], 100_000),
            lambda s, k, t, v: s.hit(k, t, f"s{v}"),
        ),
        (
            lambda: MultiEventWindows([(1, 50.0), (2, 100.0)], 100_000),
            lambda s, k, t, v: s.hit(k, t),
        ),
        (lambda: DistinctWindows(4, 100.0, 100_000), lambda s, k, t, v: s.hit(k, f"u{v % 5}", t)),
    ],
    ids=["event-spill", "event-inline", "multi-spill", "multi-inline", "distinct"],
)
def test_a_drained_flood_is_compacted_and_the_live_keys_answer_as_before(
    make: Any, hit: Any
) -> None:
    """Once expiry leaves a quarter of a large table, the store is rebuilt for the keys
    left; they then cross exactly as in a store that never saw the flood."""
    flooded = make()
    answers = _flood_then_live(flooded, hit, live=300, flood=window.COMPACT_MIN * 2)
    assert answers == _flood_then_live(make(), hit, live=300, flood=0)
    assert answers[0] < 300  # the second expiry dropped some live keys
    if isinstance(flooded, DistinctWindows):
        assert len(flooded._one_values) <= 300
    else:
        assert len(flooded._data) <= 300 * flooded._stride
        if flooded._spill is not None:
            assert len(flooded._spill) <= 300 * len(flooded._spill_blank)


def test_a_table_below_the_compaction_size_or_mostly_held_is_left_as_it_is() -> None:
    """No rebuild for a small table, nor while more than a quarter of its keys are held."""
    small = EventWindows(5, 100.0, 100_000)
    for i in range(window.COMPACT_MIN - 1):
        small.hit(f"f{i}", 0.0)
    small.expire(1000.0)
    assert len(small._data) == (window.COMPACT_MIN - 1) * small._stride
    held = EventWindows(5, 100.0, 100_000)
    keys = window.COMPACT_MIN * 3
    for i in range(keys):
        held.hit(f"f{i}", 0.0 if i < 2 * window.COMPACT_MIN else 950.0)  # a third stay
    held.expire(1000.0)
    assert len(held) == window.COMPACT_MIN
    assert len(held._data) == keys * held._stride
    assert not held.compact()


def test_recent_set_compacts_and_keeps_its_marks() -> None:
    """RecentSet (the authenticated clients) gives a drained flood's room back and keeps
    the marks of the keys left."""
    recent = RecentSet(100.0, 100_000)
    for i in range(window.COMPACT_MIN * 2):
        recent.add(f"f{i}", 0.0)
    for j in range(50):
        recent.add(f"k{j}", 950.0 + j / 10)
    recent.expire(1000.0)
    assert len(recent._data) == 50 * recent._stride
    assert [recent.last(f"k{j}") for j in range(50)] == [950.0 + j / 10 for j in range(50)]
    assert recent.last("f1") == float("-inf")


def test_distinct_windows_compaction_keeps_the_second_chance_times() -> None:
    """After compaction a single-value key keeps its queued time: expiry still stops
    at the first live key with no newer value since it was queued."""
    store = DistinctWindows(4, 100.0, 100_000)
    for i in range(window.COMPACT_MIN * 2):
        store.hit(f"f{i}", "root", 0.0)
    for key, ts in (("a", 950.0), ("b", 950.1), ("c", 951.0), ("d", 900.0)):
        store.hit(key, "root", ts)
    store.expire(1000.0)  # the flood goes; a, b, c and d stay
    assert len(store._one_values) == 4
    store.hit("a", "root", 1051.0)
    store.expire(1050.5)  # a is re-queued, b goes, c stops the walk: d stays behind it
    assert sorted(store._keys) == ["a", "c", "d"]


@pytest.mark.parametrize("threshold", [2, 5])
def test_event_windows_unquiet_ends_every_quiet_period(threshold: int) -> None:
    """After unquiet(), every key still over its threshold crosses at its next event (both
    layouts), a key below it does not, and the crossing after it is quiet again."""
    win = EventWindows(threshold, 600.0, 10)
    for key in ("a", "b"):
        crossings = [win.hit(key, T0 + i) for i in range(threshold)]
        assert crossings[-1] is not None
    assert win.hit("a", T0 + 10) is None  # quiet
    for i in range(threshold - 2):
        assert win.hit("c", T0 + 11 + i / 10) is None
    win.unquiet()
    assert win.hit("a", T0 + 12) is not None
    assert win.hit("b", T0 + 13) is not None
    assert win.hit("c", T0 + 14) is None  # one event short of its threshold
    assert win.hit("a", T0 + 15) is None  # quiet again after its new crossing


def test_event_windows_quiet_after_unquiet_holds_for_the_later_crossings() -> None:
    """A key that first crosses after unquiet() is quiet for its window as usual."""
    win = EventWindows(3, 600.0, 10)
    for i in range(3):
        win.hit("a", T0 + i)
    win.unquiet()
    crossings = [win.hit("b", T0 + 100 + i) for i in range(6)]
    assert [c is not None for c in crossings] == [False, False, True, False, False, False]


def test_multi_event_windows_unquiet_ends_every_windows_quiet_period() -> None:
    """unquiet() lets each window of a MultiEventWindows cross again at the next event."""
    multi = MultiEventWindows([(3, 600.0), (5, 3600.0)], 10)
    hits = [multi.hit("a", T0 + 60 * i) for i in range(5)]
    assert hits[2][0] is not None
    assert hits[4][1] is not None
    assert multi.hit("a", T0 + 301) == (None, None)
    multi.unquiet()
    again = multi.hit("a", T0 + 302)
    assert again[0] is not None
    assert again[1] is not None
    assert multi.hit("a", T0 + 303) == (None, None)


def test_distinct_windows_unquiet_ends_every_quiet_period() -> None:
    """After unquiet(), a key over its distinct threshold crosses at its next value."""
    dist = DistinctWindows(3, 600.0, 10)
    for i, user in enumerate(("u1", "u2", "u3")):
        crossing = dist.hit("k", user, T0 + i)
    assert crossing is not None
    assert dist.hit("k", "u4", T0 + 5) is None
    dist.unquiet()
    assert dist.hit("k", "u5", T0 + 6) is not None
    assert dist.hit("k", "u6", T0 + 7) is None


def test_rate_windows_unquiet_ends_every_quiet_period() -> None:
    """After unquiet(), every key over its rate crosses at its next hit."""
    rate = RateWindows(3, 60.0, 10)
    for key in ("a", "b"):
        assert [rate.hit(key, T0 + i) is not None for i in range(3)] == [False, False, True]
    assert rate.hit("a", T0 + 4) is None
    rate.unquiet()
    assert rate.hit("a", T0 + 5) is not None
    assert rate.hit("b", T0 + 6) is not None


def test_recent_set_clear_drops_keys_and_keeps_its_eviction_count() -> None:
    """RecentSet.clear() forgets every key (and takes new ones as usual) while its
    evicted count stays as it was."""
    seen = RecentSet(60.0, 2)
    for i in range(5):
        seen.add(f"k{i}", T0 + i)
    assert seen.evicted == 3
    seen.clear()
    assert len(seen) == 0
    assert seen.last("k4") == float("-inf")
    assert seen.evicted == 3
    seen.add("k9", T0 + 10)
    assert seen.seen("k9", T0 + 20)
    assert len(seen) == 1


class _NaiveDistinct:
    """DistinctWindows as its class doc states it, one list of ``[value, seen]`` per key:
    at most ``cap`` values (a new one replaces the one seen longest ago), quiet for a
    window after each crossing; no table limit."""

    def __init__(self, threshold: int, window: float, cap: int) -> None:
        self.threshold, self.window, self.cap = threshold, window, cap
        self.values: dict[str, list[list[Any]]] = {}
        self.quiet: dict[str, float] = {}

    def hit(self, key: str, value: str, ts: float) -> tuple[int, float, tuple[str, ...]] | None:
        held = self.values.setdefault(key, [])
        for pair in held:
            if pair[0] == value:
                pair[1] = ts
                break
        else:
            if len(held) < self.cap:
                held.append([value, ts])
            else:
                stalest = min(range(len(held)), key=lambda i: held[i][1])
                held[stalest] = [value, ts]
        if ts < self.quiet.get(key, -math.inf):
            return None
        live = sorted((seen, v) for v, seen in held if seen >= ts - self.window)
        if len(live) < self.threshold:
            return None
        self.quiet[key] = ts + self.window
        return len(live), live[0][0], tuple(v for _, v in live)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_distinct_windows_match_a_naive_model(seed: int) -> None:
    """Random streams (few keys, many values, times that go back a little) cross
    exactly where the naive model does, with the same counts, first times and values."""
    rng = random.Random(seed)
    dist = DistinctWindows(4, 60.0, 1000, margin=3)
    model = _NaiveDistinct(4, 60.0, 7)
    ts = T0
    for _ in range(20_000):
        ts += rng.choice((0.0, 0.5, 3.0, 20.0, -1.0))
        key = f"k{rng.randrange(5)}"
        value = f"v{rng.randrange(12)}"
        got = dist.hit(key, value, ts)
        want = model.hit(key, value, ts)
        assert (None if got is None else (got.events, got.first_ts, got.evidence)) == want
