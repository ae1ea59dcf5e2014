"""MultiEventWindows: several exact long windows over one key index."""

from __future__ import annotations

import random

import pytest

from aisentinel.detectors.slow import SlowCounters
from aisentinel.detectors.window import Crossing, EventWindows, MultiEventWindows


def _random_windows(rng: random.Random) -> list[tuple[int, float]]:
    """1-4 windows with thresholds 1..25 (both sides of the spill limit of 3)."""
    return [
        (rng.choice((1, 2, 3, 4, 5, rng.randint(1, 25))), float(rng.choice((5, 20, 60, 300))))
        for _ in range(rng.randint(1, 4))
    ]


def _run_against_oracle(seed: int, max_keys: int = 10_000) -> int:
    """Feed one random sequence to the store (holding ``max_keys``) and to one
    EventWindows per window, which forget each key the store evicts when it does; the
    number of crossings (asserting identical ones on every hit)."""
    rng = random.Random(seed)
    windows = _random_windows(rng)
    evidence_max = rng.choice((1, 2, 5))
    store = MultiEventWindows(windows, max_keys, evidence_max=evidence_max)
    oracle = [EventWindows(t, w, 10_000, evidence_max=evidence_max) for t, w in windows]
    keys = [f"10.0.0.{i}" for i in range(rng.randint(1, 6) * (1 if max_keys > 6 else 3))]
    whole = rng.random() < 0.5  # syslog times: whole seconds, so ties happen
    ts = 0.0
    crossings = 0
    for _ in range(rng.randint(50, 600)):
        roll = rng.random()
        if roll < 0.03:
            key = rng.choice(keys)
            store.clear(key)
            for table in oracle:
                table.clear(key)
            continue
        if roll < 0.08:
            ts += rng.uniform(30, 400)  # a gap that may exceed some windows
        elif roll < 0.2:
            ts -= rng.uniform(0, 4)  # slightly out of order
        else:
            ts += rng.choice((0.0, rng.uniform(0, 3)))
        at = float(round(ts)) if whole else ts
        key = rng.choice(keys)
        sample = rng.choice((None, "root", "admin", "ubuntu", "git", "oracle", "pi"))
        evicted = store.evicted
        got = store.hit(key, at, sample)
        if store.evicted != evicted:  # the store evicted a key: the tables forget it
            for gone in keys:
                if gone not in store:
                    for table in oracle:
                        table.clear(gone)
        want = tuple(table.hit(key, at, sample) for table in oracle)
        assert got == want, (seed, windows, key, at)
        crossings += sum(c is not None for c in got)
    return crossings


def test_matches_one_event_windows_per_window() -> None:
    """On random sequences (several keys, gaps, out-of-order and tied times, clears, 1-4
    windows, thresholds 1-25) every hit gives exactly the crossings of separate EventWindows."""
    crossings = sum(_run_against_oracle(seed) for seed in range(400))
    assert crossings > 1000  # the sequences do cross, often


def test_matches_under_eviction_without_expiry() -> None:
    """With more keys than max_keys (and no expire calls) the crossings stay those of
    separate tables that forget each key the store evicts, at the same hit."""
    crossings = sum(_run_against_oracle(seed, max_keys=2 + seed % 4) for seed in range(300))
    assert crossings > 500


def test_inline_and_spill_rings_cross_at_the_threshold() -> None:
    """A largest threshold of 3 (ring in the slot) and of 4 (spilled ring) both cross on
    the threshold-th event within the window, per window, with count, first and evidence."""
    for big in (3, 4):
        store = MultiEventWindows([(2, 10.0), (big, 100.0)], 100)
        assert store.hit("a", 0.0, "x") == (None, None)
        assert store.hit("a", 1.0, "y") == (Crossing(2, 0.0, ("x", "y")), None)
        got = [store.hit("a", 2.0 + i, "z") for i in range(big - 2)]
        assert got[-1][1] == Crossing(big, 0.0, ("x", "y", "z"))


def test_no_crossing_returns_the_shared_all_none_tuple() -> None:
    """A hit that crosses no window answers one all-None entry per window."""
    store = MultiEventWindows([(5, 60.0), (9, 600.0), (20, 3600.0)], 10)
    assert store.hit("a", 0.0) == (None, None, None)


def test_clear_forgets_every_window() -> None:
    """clear() blanks the key's counts, ring and evidence in all windows; the key stays."""
    store = MultiEventWindows([(3, 60.0), (5, 600.0)], 10)
    for i in range(4):
        store.hit("a", float(i), "old")
    store.clear("a")
    assert len(store) == 1
    got = [store.hit("a", 10.0 + i, "new") for i in range(5)]
    assert got[2] == (Crossing(3, 10.0, ("new",)), None)
    assert got[4] == (None, Crossing(5, 10.0, ("new",)))
    store.clear("unknown")
    assert len(store) == 1


def test_expire_drops_keys_idle_past_the_longest_window() -> None:
    """expire() keeps a key idle past a shorter window but within the longest one, and
    drops it once idle past the longest; __len__ counts each key once."""
    store = MultiEventWindows([(3, 60.0), (5, 600.0)], 10)
    store.hit("a", 0.0)
    store.hit("b", 500.0)
    assert len(store) == 2
    assert store.expire(300.0) == 0
    assert store.expire(601.0) == 1
    assert "a" not in store
    assert "b" in store
    assert store.expire(1101.0) == 1
    assert len(store) == 0


def test_a_key_back_after_a_shorter_window_starts_that_window_afresh() -> None:
    """A key idle past window 1 (still held for window 2) counts window 1 from its next
    event, as a fresh table would, while window 2 counts on."""
    store = MultiEventWindows([(3, 60.0), (5, 1000.0)], 10)
    store.hit("a", 0.0)
    store.hit("a", 1.0)
    store.expire(200.0)
    assert [store.hit("a", 200.0 + i) for i in range(3)] == [
        (None, None),
        (None, None),
        (Crossing(3, 200.0, ()), Crossing(5, 0.0, ())),
    ]


def test_eviction_drops_a_key_from_every_window_at_once() -> None:
    """A full store evicts in second-chance order, the evicted key from every window, its
    spilled ring reused; evicted and __len__ count keys, not windows."""
    store = MultiEventWindows([(4, 60.0), (6, 600.0)], 3)
    for i in range(3):
        store.hit(f"k{i}", float(i))
        store.hit(f"k{i}", float(i))
        store.hit(f"k{i}", float(i))  # third event: each key has a spilled ring
    store.hit("k1", 5.0)  # k1 had a newer event: a second chance
    store.hit("new", 6.0)
    assert store.evicted == 1
    assert len(store) == 3
    assert "k0" not in store
    assert "k1" in store
    store.hit("k0", 7.0)  # back from nothing: counts from 1 in every window
    assert store.evicted == 2
    assert [store.hit("k0", 8.0 + i) for i in range(2)][-1] == (None, None)
    assert store.hit("k0", 10.0)[0] == Crossing(4, 7.0, ())


def test_a_flood_of_one_event_keys_never_evicts_a_key_with_several() -> None:
    """Keys with two or more events outlast any number of one-event keys (an address
    flood meant to push a slow attacker out of the long windows); a key's first event
    outlasts max_keys - max_keys // 2 newcomers."""
    store = MultiEventWindows([(20, 86_400.0)], 100)
    for i in range(3):
        store.hit("attacker", float(i))
    for j in range(10):
        store.hit(f"friend{j}", 5.0)
        store.hit(f"friend{j}", 6.0)
    store.hit("fresh", 7.0)
    for n in range(50):
        store.hit(f"flood{n}", 10.0)
    assert "fresh" in store  # 50 newcomers: within the first event's guarantee
    for n in range(50, 100_000):
        store.hit(f"flood{n}", 10.0 + n / 1000)
    assert "attacker" in store
    assert all(f"friend{j}" in store for j in range(10))
    assert "fresh" not in store
    assert len(store) == 100
    for i in range(16):
        assert store.hit("attacker", 200.0 + i) == (None,)
    assert store.hit("attacker", 300.0) == (Crossing(20, 0.0, ()),)


def test_promoted_keys_are_capped_and_go_back_in_second_chance_order() -> None:
    """At most half the store is protected: a key promoted beyond that sends back the
    protected key without a newer event, which the next newcomers evict."""
    store = MultiEventWindows([(3, 600.0)], 4)
    for key in ("a", "b"):
        store.hit(key, 1.0)
        store.hit(key, 1.0)  # the same second: two events
    store.hit("one", 2.0)
    store.hit("two", 2.0)
    store.hit("three", 3.0)  # full: a and b promoted, "one" evicted
    assert "one" not in store
    store.hit("a", 10.0)  # a newer event since its promotion
    store.hit("c", 11.0)  # evicts "two"
    store.hit("c", 11.0)
    store.hit("four", 12.0)  # evicts "three"
    store.hit("five", 13.0)  # c promoted: b (no newer event) back, "four" evicted
    store.hit("six", 14.0)  # b evicted
    assert [k in store for k in ("a", "b", "c", "five", "six")] == [True, False, True, True, True]


def test_trim_after_lowering_max_keys() -> None:
    """trim() evicts down to a lowered max_keys and reports how many went."""
    store = MultiEventWindows([(2, 60.0)], 5)
    for i in range(5):
        store.hit(f"k{i}", float(i))
    store.max_keys = 2
    assert store.trim() == 3
    assert len(store) == 2
    assert store.evicted == 3


def test_windows_are_validated() -> None:
    """No windows, a threshold below 1, a window not positive or max_keys below 1 are refused."""
    for windows, max_keys in (([], 10), ([(0, 60.0)], 10), ([(3, 0.0)], 10), ([(3, 6.0)], 0)):
        with pytest.raises(ValueError, match=r"at least|positive"):
            MultiEventWindows(windows, max_keys)


def test_slow_counters_report_the_first_window_that_crosses() -> None:
    """SlowCounters returns the first crossing window with its threshold and length, counts
    a client once in len() and expire(), and is falsy without long windows."""
    slow = SlowCounters([(3, 60.0), (2, 600.0)], 100)
    assert slow.hit("a", 0.0) is None
    found = slow.hit("a", 1.0)
    assert found is not None
    assert (found.threshold, found.window) == (2, 600.0)
    found = slow.hit("a", 2.0)
    assert found is not None
    assert (found.threshold, found.window) == (3, 60.0)
    assert len(slow) == 1
    assert slow.expire(700.0) == 1
    assert len(slow) == 0
    assert not SlowCounters([], 100)
    assert len(SlowCounters([], 100)) == 0
