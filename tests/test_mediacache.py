"""Media cache through MediaResolver against a fake Label Studio: size limit, cache hits, single flight, LRU
eviction, pins and fetch_many; fully offline (werkzeug server in a thread)."""
import os
import threading
import time

import pytest
from werkzeug.wrappers import Response

from backend.ls.errors import MediaError
from backend.serving.media import MediaResolver, MediaSettings
from tests.fakehttp import LEGACY


def cache_files(resolver: MediaResolver) -> list[str]:
    d = resolver.settings.cache_dir
    return sorted(os.listdir(d)) if d.exists() else []


# -- size limit -----------------------------------------------------------------------------------------------------

def test_size_limit_by_content_length_is_413_and_leaves_nothing(make, ls):
    ls.serve("/data/upload/1/big.mp4", b"x" * 2000)
    resolver = make(max_file_bytes=1000)
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/big.mp4", task_id=1)
    assert err.value.status == 413 and "MEDIA_MAX_FILE_MB" in str(err.value)
    assert cache_files(resolver) == []


def test_size_limit_while_streaming_is_413_and_leaves_no_partial_file(make, ls):
    sent = []

    def chunks(_request):
        def gen():
            for _ in range(10):
                sent.append(1)
                yield b"y" * 500
        return Response(gen(), content_type="application/octet-stream")  # no Content-Length

    ls.routes["/data/upload/1/big.mp4"] = chunks
    resolver = make(max_file_bytes=1000)
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/big.mp4", task_id=1)
    assert err.value.status == 413 and cache_files(resolver) == []
    ls.serve("/data/upload/1/ok.mp4", b"z" * 1000)  # exactly the limit is fine
    assert resolver.fetch("/data/upload/1/ok.mp4", task_id=1).stat().st_size == 1000


def test_local_file_over_the_limit_is_413(make, tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "big.bin").write_bytes(b"x" * 2000)
    with pytest.raises(MediaError) as err:
        make(local_files_root=tmp_path / "root", max_file_bytes=1000).fetch("/data/local-files/?d=big.bin", task_id=1)
    assert err.value.status == 413


# -- cache ----------------------------------------------------------------------------------------------------------

def test_cache_hit_does_not_download_again_even_after_restart(make, ls):
    ls.serve("/data/upload/1/a.jpg", b"A")
    first = make().fetch("/data/upload/1/a.jpg", task_id=1)
    assert make().fetch(f"{ls.url}/data/upload/1/a.jpg#frag", task_id=2) == first  # same normalized URL
    assert len(ls.seen) == 1


def test_single_flight_eight_threads_one_download(make, ls):
    ls.serve("/data/upload/1/slow.mp4", b"S" * 1000, delay_s=0.5)
    resolver = make()
    barrier = threading.Barrier(8)
    results, errors = [], []

    def worker():
        barrier.wait()
        try:
            results.append(resolver.fetch("/data/upload/1/slow.mp4", task_id=1))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(results) == 8 and len(set(results)) == 1
    assert len(ls.seen) == 1


def test_single_flight_shares_the_error(make, ls):
    ls.routes["/data/upload/1/gone.mp4"] = lambda r: (time.sleep(0.4), Response("gone", status=404))[1]
    resolver = make()
    statuses = []

    def worker():
        try:
            resolver.fetch("/data/upload/1/gone.mp4", task_id=1)
        except MediaError as exc:
            statuses.append(exc.status)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert statuses == [404] * 8 and len(ls.seen) == 1


def test_lru_eviction_keeps_cache_under_cap_and_evicts_least_recently_used(make, ls):
    for name in "abcd":
        ls.serve(f"/data/upload/1/{name}.jpg", name.encode() * 100)
    resolver = make(max_cache_bytes=250)
    fetch = lambda n: resolver.fetch(f"/data/upload/1/{n}.jpg", task_id=1)  # noqa: E731
    pa = fetch("a")
    time.sleep(0.05)
    pb = fetch("b")
    time.sleep(0.05)
    assert fetch("a") == pa  # hit: a becomes the most recently used
    time.sleep(0.05)
    pc = fetch("c")
    assert pa.exists() and not pb.exists() and pc.exists()
    assert sum(p.stat().st_size for p in resolver.settings.cache_dir.iterdir()) <= 250
    fetch("b")
    assert len(ls.hits("/data/upload/1/b.jpg")) == 2 and len(ls.hits("/data/upload/1/a.jpg")) == 1


def test_fetch_many_keeps_its_files_pinned_until_it_returns(make, ls):
    for name in "abcd":
        ls.serve(f"/data/upload/1/{name}.jpg", name.encode() * 100)
    resolver = make(max_cache_bytes=150)
    paths = resolver.fetch_many([f"/data/upload/1/{n}.jpg" for n in "abc"], task_id=1, workers=1)
    assert all(p.exists() for p in paths)  # 300 bytes > cap, but all in use by this call
    resolver.fetch("/data/upload/1/d.jpg", task_id=1)  # now unpinned: eviction catches up
    assert [p.name for p in resolver.settings.cache_dir.iterdir()] == [resolver.fetch(
        "/data/upload/1/d.jpg", task_id=1).name]


def test_pinned_block_protects_files_fetched_earlier(make, ls):
    for name in "abc":
        ls.serve(f"/data/upload/1/{name}.jpg", name.encode() * 100)
    resolver = make(max_cache_bytes=150)
    pa = resolver.fetch("/data/upload/1/a.jpg", task_id=1)
    with resolver.pinned([pa]):
        resolver.fetch("/data/upload/1/b.jpg", task_id=1)
        assert pa.exists()
    resolver.fetch("/data/upload/1/c.jpg", task_id=1)
    assert not pa.exists()


def test_fetch_many_preserves_order(make, ls):
    urls = []
    for i in range(6):
        ls.serve(f"/data/upload/1/{i}.jpg", str(i).encode(), delay_s=0.05 * (6 - i))
        urls.append(f"/data/upload/1/{i}.jpg")
    paths = make().fetch_many(urls, task_id=1, workers=4)
    assert [p.read_bytes() for p in paths] == [str(i).encode() for i in range(6)]


def test_fetch_many_raises_first_error_and_cancels_the_rest(make, ls):
    ls.serve("/data/upload/1/a.jpg", b"A")
    ls.serve("/data/upload/1/b.jpg", b"B", delay_s=0.3)
    ls.serve("/data/upload/1/c.jpg", b"C", delay_s=0.3)
    urls = [f"/data/upload/1/{n}.jpg" for n in ("a", "missing", "b", "c")]
    with pytest.raises(MediaError) as err:
        make().fetch_many(urls, task_id=1, workers=1)
    assert err.value.status == 404
    assert ls.hits("/data/upload/1/c.jpg") == []


def test_unwritable_cache_dir_is_a_500_naming_the_setting(tmp_path, ls):
    ls.serve("/data/upload/1/a.jpg", b"A")
    (tmp_path / "not-a-dir").write_text("x")
    resolver = MediaResolver(MediaSettings(ls_url=ls.url, api_key=LEGACY, cache_dir=tmp_path / "not-a-dir"))
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/a.jpg", task_id=1)
    assert err.value.status == 500 and "MEDIA_CACHE_DIR" in str(err.value)
