"""On-disk LRU cache of media files with single-flight filling and pins that protect files in use from eviction.

Layout: one flat directory; a finished entry is a file named by the caller (`entry_name(key, basename)`), in-progress
downloads are `.part-*` files that are ignored by eviction and the size total. "Last use" is the file's mtime: a hit
sets it to now, and eviction deletes the oldest-mtime unpinned files until the total is at most `max_bytes`.

Pins are a per-name refcount: `acquire` pins the entry and the caller `release`s it when it no longer needs the file.
A pinned file is never evicted, so the cache may exceed `max_bytes` while files are in use (a warning is logged).
Single flight: concurrent `acquire`s of one name run `fill` once; the others wait and share its result or error.
All of this is per process (see backend/serving/media.py for what that means with several gunicorn workers).
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from backend.serving.errors import MediaError

logger = logging.getLogger(__name__)

PART_PREFIX = ".part-"


def entry_name(key: str, basename: str) -> str:
    """File name for cache key `key`: `sha256(key)[:24]_<basename sanitized, at most 80 chars>`."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", basename)[-80:].lstrip(".") or "media"
    return f"{hashlib.sha256(key.encode()).hexdigest()[:24]}_{base}"


def write_atomic(dest: Path, chunks: Iterable[bytes], max_bytes: int, too_big: Callable[[], BaseException]) -> int:
    """Write `chunks` to `dest` through a `.part-*` file in its directory and an atomic rename; return the byte count.

    Raises `too_big()` as soon as more than `max_bytes` bytes arrive. The temp file is removed on any failure, so a
    reader sees either no file or the complete one.
    """
    fd, tmp = tempfile.mkstemp(prefix=PART_PREFIX, dir=dest.parent)
    try:
        written = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise too_big()
                out.write(chunk)
        os.replace(tmp, dest)
        return written
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@dataclass
class _Flight:
    done: threading.Event = field(default_factory=threading.Event)
    error: MediaError | None = None


class MediaCache:
    """Thread-safe LRU file cache under `directory`, capped at `max_bytes` (bytes) of finished entries."""

    def __init__(self, directory: Path, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._lock = threading.Lock()  # guards _flights and _pins; eviction unlinks under it so pins are honoured
        self._evict_lock = threading.Lock()
        self._flights: dict[str, _Flight] = {}
        self._pins: Counter[str] = Counter()

    def acquire(self, name: str, fill: Callable[[Path], None], *, label: str) -> Path:
        """Return the path of entry `name`, pinned; on a miss call `fill(path)` once across threads, then evict.

        `fill` must create `path` atomically (e.g. with `write_atomic`) and raise MediaError on failure. `label`
        names the media in errors and logs. The caller must `release(name)`.
        """
        path = self.directory / name
        with self._lock:
            self._pins[name] += 1
        try:
            for _ in range(3):  # a hit can vanish if another process evicts it; then it is filled again
                with self._lock:
                    hit = path.exists()
                    flight = None if hit else self._flights.get(name)
                    leader = not hit and flight is None
                    if leader:
                        flight = self._flights[name] = _Flight()
                if not hit:
                    break
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)
                    logger.debug("media cache hit %s", label)
                    return path
            else:
                raise MediaError(f"Cached media for {label!r} keeps disappearing; check that MEDIA_CACHE_DIR is not "
                                 "cleaned by another process.", status=500)
            if leader:
                self._lead(flight, name, fill, label)
            else:
                flight.done.wait()
                if flight.error is not None:
                    raise MediaError(str(flight.error), status=flight.error.status)
            return path
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

    def _lead(self, flight: _Flight, name: str, fill: Callable[[Path], None], label: str) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fill(self.directory / name)
        except MediaError as exc:
            flight.error = exc
            raise
        except BaseException as exc:  # waiters must get a MediaError whatever happened (even KeyboardInterrupt)
            flight.error = MediaError(f"Fetching {label!r} into MEDIA_CACHE_DIR failed ({exc!r}); check the cache "
                                      "directory is writable and has space.", status=500)
            if not isinstance(exc, Exception):
                raise
            raise flight.error from exc
        finally:
            with self._lock:
                del self._flights[name]
            flight.done.set()
        try:
            self.evict()
        except OSError as exc:  # the download succeeded; a failed clean-up must not fail the fetch
            logger.warning("media cache eviction failed: %s", exc)

    @property
    def nbytes(self) -> int:
        """Bytes of finished entries on disk now."""
        total = 0
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.directory):
                if entry.is_file() and not entry.name.startswith(PART_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        total += entry.stat().st_size
        return total

    def evict(self) -> None:
        """Delete least-recently-used unpinned entries until the total size is at most `max_bytes`."""
        with self._evict_lock:
            files = []
            for entry in os.scandir(self.directory):
                if entry.is_file() and not entry.name.startswith(PART_PREFIX):
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat()
                        files.append((st.st_mtime_ns, st.st_size, entry.name))
            total = sum(size for _, size, _ in files)
            for _, size, name in sorted(files):
                if total <= self.max_bytes:
                    return
                with self._lock:
                    if self._pins.get(name):
                        continue
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.directory / name)
                total -= size
                logger.info("evicted %s (%d bytes) from the media cache", name, size)
            if total > self.max_bytes:
                logger.warning("media cache holds %d bytes, over its %d byte cap, because those files are in use",
                               total, self.max_bytes)
