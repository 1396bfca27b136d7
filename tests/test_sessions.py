"""The shared session store: caps by count, bytes and idle time; close outside the lock; one build per key."""
from __future__ import annotations

import threading
import time

import pytest

from backend.serving.sessions import SessionStore, StoreBusy


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make(**kw):
    closed = []
    kw.setdefault("max_items", 3)
    store = SessionStore(close=lambda k, v: closed.append(k), **kw)
    return store, closed


def test_count_cap_evicts_least_recently_used():
    store, closed = make(max_items=2)
    store.put("a", 1)
    store.put("b", 2)
    assert store.get("a") == 1  # a is now the most recent
    store.put("c", 3)
    assert closed == ["b"] and store.keys() == ["a", "c"]


def test_byte_cap_evicts_until_it_holds_but_keeps_the_growing_session():
    sizes = {"a": 40, "b": 40, "c": 40}
    store, closed = make(max_items=10, max_bytes=100, size_of=lambda v: sizes[v])
    for k in "abc":
        store.put(k, k)
    assert closed == ["a"] and store.nbytes == 80
    sizes["c"] = 500  # one session alone above the cap stays; everything else goes
    store.touch("c")
    assert closed == ["a", "b"] and store.keys() == ["c"]


def test_ttl_closes_idle_sessions_only():
    clock = Clock()
    store, closed = make(ttl_s=10, clock=clock)
    store.put("a", 1)
    clock.t = 5
    store.put("b", 2)
    clock.t = 12
    assert store.sweep() == 1 and closed == ["a"] and store.keys() == ["b"]


def test_replacing_a_value_closes_the_old_one():
    store, closed = make()
    store.put("a", object())
    store.put("a", object())
    assert closed == ["a"] and len(store) == 1


def test_close_runs_outside_the_lock_so_other_keys_stay_available():
    started, release = threading.Event(), threading.Event()

    def slow_close(k, v):
        started.set()
        release.wait(5)

    store = SessionStore(max_items=1, close=slow_close)
    store.put("a", 1)
    t = threading.Thread(target=store.put, args=("b", 2))
    t.start()
    assert started.wait(5)
    t0 = time.monotonic()
    assert store.get("b") == 2  # answered while "a" is still closing
    assert time.monotonic() - t0 < 1.0
    release.set()
    t.join(5)


def test_get_or_create_builds_once_per_key_and_waiters_time_out():
    gate = threading.Event()
    calls = []

    def factory():
        calls.append(1)
        gate.wait(5)
        return "session"

    store = SessionStore(max_items=4)
    results = []
    t = threading.Thread(target=lambda: results.append(store.get_or_create("k", factory)))
    t.start()
    time.sleep(0.1)
    with pytest.raises(StoreBusy):
        store.get_or_create("k", factory, wait_s=0.2)
    assert store.get_or_create("other", lambda: "x") == ("x", True)  # other keys never wait
    gate.set()
    t.join(5)
    assert results == [("session", True)] and calls == [1]
    assert store.get_or_create("k", factory) == ("session", False)


def test_a_failed_build_lets_the_next_caller_build():
    store = SessionStore(max_items=4)

    def boom():
        raise RuntimeError("media gone")

    with pytest.raises(RuntimeError):
        store.get_or_create("k", boom)
    assert store.get_or_create("k", lambda: 7) == (7, True)


def test_a_failing_close_does_not_keep_other_sessions_alive():
    closed = []

    def close(k, v):
        closed.append(k)
        if k == "a":
            raise OSError("disk")

    store = SessionStore(max_items=3, close=close)
    for k in "abc":
        store.put(k, k)
    store.close_all()
    assert closed == ["a", "b", "c"] and len(store) == 0
