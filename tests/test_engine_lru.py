"""The engine's byte-capped LRU (engine/lru.py) as the feature cache and the conditioned-features cache use it."""
from __future__ import annotations

import numpy as np

from backend.engine.conditioned import ConditionedCache
from backend.engine.features import FeatureCache, FrameFeatures


def _features(n: int) -> FrameFeatures:
    """Features of n * 3 * 4 bytes (three float32 arrays of n values)."""
    return FrameFeatures(*(np.zeros(n, np.float32) for _ in range(3)))


def test_feature_cache_evicts_least_recently_used_until_the_byte_cap_holds():
    cache = FeatureCache(max_bytes=3 * 120)  # room for three 120-byte entries
    for f in range(3):
        cache.put(("a", f), _features(10))
    assert cache.get(("a", 0)) is not None  # frame 0 is now the most recent
    cache.put(("a", 3), _features(10))
    assert cache.get(("a", 1)) is None and cache.get(("a", 0)) is not None  # 1 was least recent: evicted
    assert len(cache) == 3 and cache.nbytes == 360
    assert (cache.hits, cache.misses) == (2, 1)
    cache.put(("a", 0), _features(20))  # replacing a value accounts its new size, and still evicts to the cap
    assert cache.nbytes <= 360 and cache.get(("a", 0)) is not None and cache.get(("a", 2)) is None


def test_feature_cache_refuses_what_cannot_fit_and_zero_disables_it():
    cache = FeatureCache(max_bytes=100)
    cache.put(("a", 0), _features(10))  # 120 bytes > 100
    assert len(cache) == 0 and cache.nbytes == 0
    off = FeatureCache(max_bytes=0)
    off.put(("a", 0), _features(1))
    assert off.get(("a", 0)) is None and off.nbytes == 0


def test_drop_source_forgets_only_that_source():
    cache = FeatureCache(max_bytes=1 << 20)
    for src in ("a", "b"):
        for f in range(2):
            cache.put((src, f), _features(10))
    cache.drop_source("a")
    assert len(cache) == 2 and cache.nbytes == 240
    assert cache.get(("a", 0)) is None and cache.get(("b", 1)) is not None


def test_conditioned_cache_stores_a_read_only_float32_copy_and_drops_by_session():
    cache = ConditionedCache(max_bytes=1 << 20)
    big = np.ones((2, 4, 3, 3), np.float64)
    cache.put(("s1", 1, 0), big[:1])  # a view of a larger float64 buffer
    stored = cache.get(("s1", 1, 0))
    assert stored.dtype == np.float32 and not stored.flags.writeable and stored.base is None
    assert cache.nbytes == stored.nbytes == 4 * 3 * 3 * 4
    big[:] = 7  # the caller's buffer changing does not reach the cache
    assert float(cache.get(("s1", 1, 0)).max()) == 1.0
    cache.put(("s2", 1, 0), np.zeros((1, 4, 3, 3), np.float32))
    cache.drop_session("s1")
    assert cache.get(("s1", 1, 0)) is None and cache.get(("s2", 1, 0)) is not None and len(cache) == 1
