"""On-disk LRU cache of media files whose byte cap holds at every moment, in-flight downloads and pinned files included.

Layout: one flat directory owned by one backend process; a finished entry is a file named by the caller
(`entry_name(key, basename)`), an in-progress download is a `.part-*` file. The cache keeps an in-memory index
(name -> bytes, in LRU order; loaded from the directory at start, oldest mtime first) and a byte account:

    used (finished entries) + reserved (bytes promised to in-flight downloads) <= max_bytes, always.

A download reserves bytes before it writes them (`Fill.reserve(total)`: the Content-Length up front, then as the body
grows); a reservation evicts least-recently-used unpinned entries, and if that cannot make room it fails: 413 when the
media of the one request (`CacheGroup`: all files of one task) cannot fit under the cap even alone, 507 when files in
use by other requests hold the space. Pins (per-name refcounts taken by `acquire` and `pinned`) keep files in use from
eviction but never let the total pass the cap.

Single flight: concurrent `acquire`s of one name run `fill` once; the others wait, at most `wait_s` seconds, and share
its result or error. At start, `.part-*` leftovers of a crashed process are deleted.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.serving import leftovers
from backend.serving.errors import MediaError

logger = logging.getLogger(__name__)

PART_PREFIX = ".part-"
_MB = 1 << 20


def entry_name(key: str, basename: str) -> str:
    """File name for cache key `key`: `sha256(key)[:24]_<basename sanitized, at most 80 chars>`."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", basename)[-80:].lstrip(".") or "media"
    return f"{hashlib.sha256(key.encode()).hexdigest()[:24]}_{base}"


def write_atomic(dest: Path, chunks: Iterable[bytes], max_bytes: int, too_big: Callable[[], BaseException],
                 reserve: Callable[[int], None] | None = None) -> int:
    """Write `chunks` to `dest` through a `.part-*` file in its directory and an atomic rename; return the byte count.

    Raises `too_big()` as soon as more than `max_bytes` bytes arrive; calls `reserve(total so far)` before writing each
    chunk (it may raise to abort). The temp file is removed on any failure, so a reader sees no file or the whole one.
    """
    fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, dir=dest.parent)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise too_big()
                if reserve is not None:
                    reserve(written)
                out.write(chunk)
        os.replace(tmp, dest)
        return written
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass
class CacheGroup:
    """The files one request needs together (e.g. all frames of a task): their bytes (cached, or reserved by their
    downloads in flight) decide 413 (the group alone cannot fit) vs 507 (others hold the space)."""

    nbytes: int = 0


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    error: MediaError | None = None
    reserved: int = 0


class Fill:
    """Handed to a cache fill: `reserve(total)` promises the download `total` bytes (raises MediaError if the cap
    cannot make room; call it with the Content-Length first and with the running byte count as data arrives)."""

    def __init__(self, cache: MediaCache, flight: _Flight, group: CacheGroup, label: str):
        self._cache, self._flight, self._group, self._label = cache, flight, group, label

    def reserve(self, total: int) -> None:
        if total > self._flight.reserved:
            self._cache._reserve(self._flight, total - self._flight.reserved, self._group, self._label)


class MediaCache:
    """Thread-safe LRU file cache under `directory`, capped at `max_bytes` bytes including in-flight downloads."""

    def __init__(self, directory: Path, max_bytes: int, *, wait_s: float = 600.0):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.wait_s = float(wait_s)
        self._lock = threading.Lock()  # guards everything below; unlinks happen under it so pins are honoured
        self._flights: dict[str, _Flight] = {}
        self._pins: Counter[str] = Counter()
        self._entries: OrderedDict[str, int] = OrderedDict()  # finished entries, least recently used first
        self._used = 0
        self._reserved = 0
        self._loaded = False
        try:
            with self._lock:
                self._load_locked()
        except OSError as exc:  # reported on first use, with the setting named
            logger.warning("media cache %s not usable yet: %s", self.directory, exc.strerror or exc)

    # ---- public --------------------------------------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes on disk now: finished entries plus bytes reserved by downloads in progress."""
        with self._lock:
            return self._used + self._reserved

    def acquire(self, name: str, fill: Callable[[Path, Fill], None], *, label: str,
                group: CacheGroup | None = None) -> Path:
        """Return the path of entry `name`, pinned; on a miss call `fill(path, Fill)` once across threads.

        `fill` must create `path` atomically (e.g. with `write_atomic`), reserve its bytes through the `Fill`, and
        raise MediaError on failure. `label` names the media in errors and logs (already redacted). The caller must
        `release(name)`.
        """
        group = group if group is not None else CacheGroup()
        path = self.directory / name
        with self._lock:
            self._pins[name] += 1
        try:
            for _ in range(3):  # an indexed file can vanish if something else deletes it; then it is filled again
                with self._lock:
                    self._ensure_loaded_locked()
                    size = self._entries.get(name)
                    if size is not None and not path.exists():
                        self._forget_locked(name)
                        size = None
                    if size is not None:
                        self._entries.move_to_end(name)
                        group.nbytes += size
                        flight, leader = None, False
                    else:
                        flight = self._flights.get(name)
                        leader = flight is None
                        if leader:
                            flight = self._flights[name] = _Flight()
                if flight is None:
                    with contextlib.suppress(FileNotFoundError):
                        os.utime(path)  # LRU order survives a restart
                    logger.debug("media cache hit %s", label)
                    return path
                if leader:
                    self._lead(flight, name, fill, label, group)
                    return path
                if not flight.done.wait(self.wait_s):
                    raise MediaError(f"Waited more than {self.wait_s:g} s for another request's download of {label!r}; "
                                     "retry later or raise MEDIA_TOTAL_TIMEOUT_S.", status=504)
                if flight.error is not None:
                    raise MediaError(str(flight.error), status=flight.error.status)
                # the leader's file is in the index now (pinned by us); count it for our group and return it
            raise MediaError(f"Cached media for {label!r} keeps disappearing; check that MEDIA_CACHE_DIR is not "
                             "cleaned by another process.", status=500)
        except BaseException:
            self.release(name)
            raise

    def release(self, name: str) -> None:
        """Drop one pin of entry `name` (taken by `acquire` or `pinned`)."""
        with self._lock:
            self._pins[name] -= 1
            if self._pins[name] <= 0:
                del self._pins[name]

    @contextlib.contextmanager
    def pinned(self, paths: Sequence[Path]) -> Iterator[None]:
        """Keep those of `paths` that live in this cache from eviction inside the block."""
        names = [Path(p).name for p in paths if Path(p).parent == self.directory]
        with self._lock:
            self._pins.update(names)
        try:
            yield
        finally:
            for name in names:
                self.release(name)

    def evict(self) -> None:
        """Delete least-recently-used unpinned entries until finished plus reserved bytes fit under `max_bytes`."""
        with self._lock:
            self._evict_locked(self._used + self._reserved - self.max_bytes)

    # ---- internals -----------------------------------------------------------------------------------------------
    def _lead(self, flight: _Flight, name: str, fill: Callable[[Path, Fill], None], label: str,
              group: CacheGroup) -> None:
        path = self.directory / name
        try:
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                fill(path, Fill(self, flight, group, label))
                size = path.stat().st_size
            except MediaError as exc:
                flight.error = exc
                raise
            except BaseException as exc:  # waiters must get a MediaError whatever happened (even KeyboardInterrupt)
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                flight.error = MediaError(f"Fetching {label!r} into MEDIA_CACHE_DIR failed ({why}); check the cache "
                                          "directory is writable and has space.", status=500)
                if not isinstance(exc, Exception):
                    raise
                raise flight.error from exc
        except BaseException:
            with self._lock:
                self._reserved -= flight.reserved
                group.nbytes -= flight.reserved
                del self._flights[name]
            flight.done.set()
            raise
        with self._lock:
            self._reserved -= flight.reserved
            if size > flight.reserved:  # a fill that did not reserve (or under-reserved): account for it now
                self._evict_locked(self._used + self._reserved + size - self.max_bytes)
            self._entries[name] = size
            self._used += size
            group.nbytes += size - flight.reserved
            del self._flights[name]
        flight.done.set()

    def _reserve(self, flight: _Flight, extra: int, group: CacheGroup, label: str) -> None:
        with self._lock:
            over = self._used + self._reserved + extra - self.max_bytes
            if over > 0:
                self._evict_locked(over)
            if self._used + self._reserved + extra > self.max_bytes:
                mine = group.nbytes + extra
                cap = f"MEDIA_CACHE_MAX_MB ({self.max_bytes / _MB:g} MB)"
                if mine > self.max_bytes:
                    raise MediaError(f"The media of this task ({label!r} and the files fetched with it: over "
                                     f"{mine / _MB:.1f} MB) does not fit in the media cache; raise {cap} or use "
                                     "smaller media.", status=413)
                raise MediaError(f"The media cache is full of files other tasks are using ({cap}); retry in a "
                                 "moment or raise MEDIA_CACHE_MAX_MB.", status=507)
            self._reserved += extra
            flight.reserved += extra
            group.nbytes += extra

    def _evict_locked(self, need: int) -> None:
        """Unlink least-recently-used unpinned entries until `need` bytes are freed (or none is left to unlink)."""
        for name in list(self._entries):
            if need <= 0:
                return
            if self._pins.get(name):
                continue
            size = self._forget_locked(name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.directory / name)
            need -= size
            logger.info("evicted %s (%d bytes) from the media cache", name, size)

    def _forget_locked(self, name: str) -> int:
        size = self._entries.pop(name)
        self._used -= size
        return size

    def _ensure_loaded_locked(self) -> None:
        if not self._loaded:
            try:
                self._load_locked()
            except OSError as exc:
                raise MediaError(f"MEDIA_CACHE_DIR cannot be used ({exc.strerror or type(exc).__name__}); set it to "
                                 "a writable directory.", status=500) from None

    def _load_locked(self) -> None:
        """Index the finished entries (LRU by mtime) and delete `.part-*` leftovers of a crashed process (only when
        this process owns the directory: see backend/serving/leftovers.py)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        owner = leftovers.claim(self.directory)
        if owner:
            weakref.finalize(self, leftovers.release, self.directory)
        found, parts = [], 0
        for entry in os.scandir(self.directory):
            if not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.name.startswith(PART_PREFIX):
                    if owner:
                        os.unlink(entry.path)
                        parts += 1
                    continue
                if entry.name.startswith("."):
                    continue
                st = entry.stat(follow_symlinks=False)
                found.append((st.st_mtime_ns, st.st_size, entry.name))
        self._entries = OrderedDict((name, size) for _, size, name in sorted(found))
        self._used = sum(self._entries.values())
        self._loaded = True
        if parts:
            logger.info("deleted %d unfinished download(s) left in %s by an earlier run", parts, self.directory)
        self._evict_locked(self._used + self._reserved - self.max_bytes)
