"""Media cache through MediaResolver against a fake Label Studio: size limit, cache hits, single flight, LRU
eviction, pins and fetch_many; fully offline (werkzeug server in a thread)."""
import os
import threading
import time

import pytest
from werkzeug.wrappers import Response

from backend.ls.errors import MediaError
from backend.serving.leftovers import LOCK_NAME
from backend.serving.media import MediaResolver, MediaSettings
from tests.fakehttp import LEGACY, FakeHost


def cache_files(resolver: MediaResolver) -> list[str]:
    d = resolver.settings.cache_dir
    return sorted(n for n in os.listdir(d) if n != LOCK_NAME) if d.exists() else []


def cached_paths(resolver: MediaResolver) -> list:
    return [p for p in resolver.settings.cache_dir.iterdir() if p.name != LOCK_NAME]


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
    assert sum(p.stat().st_size for p in cached_paths(resolver)) <= 250
    fetch("b")
    assert len(ls.hits("/data/upload/1/b.jpg")) == 2 and len(ls.hits("/data/upload/1/a.jpg")) == 1


def test_fetch_many_files_stay_pinned_and_a_task_over_the_cap_is_413_naming_the_setting(make, ls):
    # before: the three pinned files (300 bytes) were all kept, over the 250-byte cap, "because they are in use"
    for name in "abcd":
        ls.serve(f"/data/upload/1/{name}.jpg", name.encode() * 100)
    resolver = make(max_cache_bytes=250)
    paths = resolver.fetch_many([f"/data/upload/1/{n}.jpg" for n in "ab"], task_id=1, workers=1)
    assert all(p.exists() for p in paths)
    with pytest.raises(MediaError) as err:
        resolver.fetch_many([f"/data/upload/1/{n}.jpg" for n in "abc"], task_id=1, workers=1)
    assert err.value.status == 413 and "MEDIA_CACHE_MAX_MB" in str(err.value)
    assert resolver.cache.nbytes <= 250 and sum(p.stat().st_size for p in cached_paths(resolver)) <= 250
    resolver.fetch("/data/upload/1/d.jpg", task_id=1)  # nothing pinned now: eviction makes room
    assert sum(p.stat().st_size for p in cached_paths(resolver)) <= 250


def test_pinned_files_are_kept_and_the_cap_still_holds(make, ls):
    # before: fetching b while a was pinned left 200 bytes in a 150-byte cache
    for name in "abc":
        ls.serve(f"/data/upload/1/{name}.jpg", name.encode() * 100)
    resolver = make(max_cache_bytes=150)
    pa = resolver.fetch("/data/upload/1/a.jpg", task_id=1)
    with resolver.pinned([pa]):
        with pytest.raises(MediaError) as err:
            resolver.fetch("/data/upload/1/b.jpg", task_id=1)
        assert err.value.status == 507 and "MEDIA_CACHE_MAX_MB" in str(err.value)
        assert pa.exists() and [p.name for p in cached_paths(resolver)] == [pa.name]
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


# -- the byte cap holds in every case (issue 9, High 4) -------------------------------------------------------------

def test_query_variants_of_one_ls_upload_are_one_cache_entry_and_one_download(make, ls):
    # before: big.jpg?n=1..20 made 20 downloads and 20 cache files of the same upload
    ls.serve("/data/upload/1/big.jpg", b"B" * 1000)
    resolver = make()
    paths = {resolver.fetch(f"/data/upload/1/big.jpg?n={i}", task_id=1) for i in range(20)}
    assert len(paths) == 1 and len(ls.seen) == 1 and ls.seen[0]["args"] == {}
    assert len(cache_files(resolver)) == 1


def test_presigned_variants_of_one_object_are_one_cache_entry(make):
    bucket = FakeHost("localhost")
    try:
        bucket.serve("/bucket/v.mp4", b"V" * 100)
        resolver = make(allowed_hosts=("localhost",))
        for sig in ("a", "b", "c"):
            resolver.fetch(f"{bucket.url}/bucket/v.mp4?X-Amz-Signature={sig}&X-Amz-Expires=60&versionId=1", task_id=1)
        assert len(bucket.seen) == 1 and len(cache_files(resolver)) == 1
        assert bucket.seen[0]["args"]["X-Amz-Signature"] == "a"  # the request keeps its signature, only the key drops it
        resolver.fetch(f"{bucket.url}/bucket/v.mp4?X-Amz-Signature=d&versionId=2", task_id=1)  # another version
        assert len(bucket.seen) == 2
    finally:
        bucket.close()


def test_an_in_flight_download_counts_against_the_cap_and_is_aborted_past_it(make, ls):
    # before: .part files were not counted, so a pinned 600 B file + a 600 B download sat in a 1000 B cache
    sent = []

    def stream(_request):
        def gen():
            for _ in range(12):
                sent.append(1)
                yield b"y" * 50
        return Response(gen(), content_type="application/octet-stream")  # no Content-Length: reserved as it grows

    ls.serve("/data/upload/1/a.mp4", b"a" * 600)
    ls.routes["/data/upload/1/b.mp4"] = stream
    resolver = make(max_cache_bytes=1000)
    pa = resolver.fetch("/data/upload/1/a.mp4", task_id=1)
    with resolver.pinned([pa]):
        with pytest.raises(MediaError) as err:
            resolver.fetch("/data/upload/1/b.mp4", task_id=2)
        assert err.value.status == 507 and "MEDIA_CACHE_MAX_MB" in str(err.value)
    assert cache_files(resolver) == [pa.name] and resolver.cache.nbytes == 600  # no .part left, reservation returned
    assert resolver.fetch("/data/upload/1/b.mp4", task_id=2).stat().st_size == 600  # unpinned: a is evicted
    assert not pa.exists() and resolver.cache.nbytes == 600


def test_a_single_file_larger_than_the_cache_is_413_before_its_body_is_read(make, ls):
    ls.serve("/data/upload/1/big.mp4", b"x" * 2000)
    resolver = make(max_cache_bytes=1000)
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/big.mp4", task_id=1)
    assert err.value.status == 413 and "MEDIA_CACHE_MAX_MB" in str(err.value) and cache_files(resolver) == []


def test_leftover_part_files_are_deleted_at_start_and_old_entries_are_indexed(make, ls, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / ".part-crashed1").write_bytes(b"p" * 500)
    (cache / ("0" * 24 + "_old.jpg")).write_bytes(b"o" * 300)
    resolver = make()
    assert cache_files(resolver) == ["0" * 24 + "_old.jpg"] and resolver.cache.nbytes == 300


def test_existing_entries_over_a_lowered_cap_are_evicted_at_start(make, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    for i, name in enumerate("abc"):
        (cache / f"{name}.jpg").write_bytes(b"x" * 400)
        os.utime(cache / f"{name}.jpg", ns=(10**18 + i, 10**18 + i))
    resolver = make(max_cache_bytes=900)
    assert cache_files(resolver) == ["b.jpg", "c.jpg"]  # a was least recently used


# -- deadlines (issue 9, High 3) --------------------------------------------------------------------------------------

def test_a_server_dripping_bytes_is_cut_at_the_total_deadline(make, ls):
    # before: only the per-read timeout applied, so one byte per 0.2 s kept the download (and its thread) going
    def drip(_request):
        def gen():
            for _ in range(100):
                time.sleep(0.2)
                yield b"d"
        return Response(gen(), content_type="application/octet-stream")

    ls.routes["/data/upload/1/drip.mp4"] = drip
    resolver = make(timeout_s=1.0, total_timeout_s=1.5)
    t0 = time.monotonic()
    with pytest.raises(MediaError) as err:
        resolver.fetch("/data/upload/1/drip.mp4", task_id=1)
    assert err.value.status == 504 and "MEDIA_TOTAL_TIMEOUT_S" in str(err.value)
    assert time.monotonic() - t0 < 4 and cache_files(resolver) == [] and resolver.cache.nbytes == 0


def test_headers_dripping_forever_are_cut_at_the_total_deadline(tmp_path):
    import socket
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = server.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            while not stop.is_set():
                try:
                    conn.sendall(b"X")  # a header line that never ends, one byte per 0.2 s (< the read timeout)
                except OSError:
                    return
                time.sleep(0.2)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    resolver = MediaResolver(MediaSettings(ls_url=url, api_key=LEGACY, cache_dir=tmp_path / "c", timeout_s=1.0,
                                           total_timeout_s=1.5))
    t0 = time.monotonic()
    try:
        with pytest.raises(MediaError) as err:
            resolver.fetch("/data/upload/1/a.mp4", task_id=1)
    finally:
        stop.set()
        server.close()
    assert err.value.status == 504 and time.monotonic() - t0 < 4


def test_a_waiter_on_a_shared_download_waits_with_a_deadline(tmp_path):
    # before: flight.done.wait() had no timeout, so a stuck leader held every waiter forever
    from backend.serving.mediacache import MediaCache
    cache = MediaCache(tmp_path / "c", 1 << 20, wait_s=0.3)
    release = threading.Event()

    def stuck_fill(path, slot):
        release.wait(10)
        path.write_bytes(b"late")

    leader = threading.Thread(target=lambda: cache.acquire("x", stuck_fill, label="x"), daemon=True)
    leader.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    with pytest.raises(MediaError) as err:
        cache.acquire("x", stuck_fill, label="x")
    assert err.value.status == 504 and time.monotonic() - t0 < 2
    release.set()
    leader.join(5)


def test_a_second_process_on_the_same_cache_dir_leaves_its_part_files_alone(tmp_path):
    # the .part cleanup at start must not delete a live backend's in-flight download
    import subprocess
    import sys
    cache = tmp_path / "cache"
    cache.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from backend.serving.leftovers import claim; "
        f"assert claim({str(cache)!r}); print('held', flush=True); time.sleep(30)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (cache / ".part-live").write_bytes(b"in flight")
        MediaResolver(MediaSettings(ls_url=None, api_key=None, cache_dir=cache))
        assert (cache / ".part-live").exists()
    finally:
        holder.kill()
        holder.wait()
    MediaResolver(MediaSettings(ls_url=None, api_key=None, cache_dir=cache))  # the owner is gone: now it is cleaned
    assert not (cache / ".part-live").exists()


def test_spill_leftovers_are_deleted_at_start(tmp_path):
    from backend.serving.leftovers import clean_spill, release
    spill = tmp_path / "data" / "spill"
    (spill / "sess-abc").mkdir(parents=True)
    (spill / "sess-abc" / "3_17.npz").write_bytes(b"x" * 100)
    (spill / "keep.txt").write_text("not ours")
    try:
        assert clean_spill(tmp_path / "data") == 1
        assert not (spill / "sess-abc").exists() and (spill / "keep.txt").exists()
    finally:
        release(spill)


def test_a_frames_task_too_big_for_the_cache_is_413_even_when_its_files_download_in_parallel(make, ls):
    # the task's own in-flight downloads count as its own, so the answer is 413 (fix the setting), not 507 (retry)
    for i in range(8):
        ls.serve(f"/data/upload/1/{i}.jpg", b"x" * 300, delay_s=0.2)
    resolver = make(max_cache_bytes=1000)
    with pytest.raises(MediaError) as err:
        resolver.fetch_many([f"/data/upload/1/{i}.jpg" for i in range(8)], task_id=1, workers=4)
    assert err.value.status == 413 and "MEDIA_CACHE_MAX_MB" in str(err.value)
    assert resolver.cache.nbytes <= 1000
