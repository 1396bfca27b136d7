"""Clean what a crashed backend left on disk, without touching the files of another backend that is still running.

A directory is cleaned only by the process that holds its owner lock (`<dir>/.owner.lock`, an exclusive `flock`
kept for the life of the process): a second backend started on the same MEDIA_CACHE_DIR or DATA_DIR does not get the
lock, so it leaves the live process's in-flight downloads and spill files alone (and says so in the log).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from pathlib import Path
from typing import IO

logger = logging.getLogger(__name__)

LOCK_NAME = ".owner.lock"
_held: dict[Path, IO] = {}  # directory -> open lock file, kept open (and locked) until the process exits


def claim(directory: Path) -> bool:
    """True if this process just became the owner of `directory` (created if missing), so leftovers there are from a
    dead process and may be deleted. False if another process holds it, or this process already did (then the
    files there may belong to a live object of this process)."""
    directory = Path(directory).resolve()
    if directory in _held:
        return False
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 - kept open on purpose
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        logger.warning("%s is in use by another backend process; leftovers there are not cleaned", directory)
        return False
    _held[directory] = handle
    return True


def release(directory: Path) -> None:
    """Give up the owner lock of `directory` (tests; a process normally holds it until it exits)."""
    handle = _held.pop(Path(directory).resolve(), None)
    if handle is not None:
        handle.close()


def clean_spill(data_dir: Path) -> int:
    """Delete `DATA_DIR/spill/sess-*` folders left by a crashed run (the engine's spilled per-frame memories); returns
    how many were deleted. Call once at start, before any session exists."""
    spill = Path(data_dir) / "spill"
    if not claim(spill):
        return 0
    removed = 0
    for entry in spill.glob("sess-*"):
        with contextlib.suppress(FileNotFoundError):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed += 1
    if removed:
        logger.info("deleted %d spill folder(s) left in %s by an earlier run", removed, spill)
    return removed
