"""The per-task tracking core every front door shares (sessions, task locks, jobs, prompts into the engine).

Locks: one per task (`KeyedLocks`, waits at most TASK_LOCK_WAIT_S, then 409 with Retry-After); the session store's
lock is held only for lookups, and evicted sessions are closed outside it, after their job has left the engine.
No thread waits for another while holding a lock that other tasks need.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from backend.serving.jobs import Job, JobManager, Pass
from backend.serving.locks import KeyedLocks, TaskBusy
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.serving.sessions import SessionStore
from backend.settings import Settings

logger = logging.getLogger(__name__)


class TrackingCore:
    """The per-task tracking core every front door shares: the session store (LRU by count, bytes, idle time),
    one lock per task, the background propagation jobs, pushing a tracker's prompts into the engine and restarting
    propagation, replaying a rebuilt session, and closing evicted sessions once their job has left the engine.

    An adapter subclasses it and provides what is specific to its tool: how a task's session is built and how its
    prompts are read (e.g. `backend.ls.service.TrackingService`), and the hooks `_write` (publish a job's growing
    result) and `_job_stopped` (a job stopped before its final write). Entries kept in the store have `tracker`
    (with `task_id`, `version`, `lock`, `ledger.prompts()`, `applied`, `num_frames`, `session`, `sync`, `passes`,
    `frames_in`, `record`), `media` (the key the session was built for), `closed`, `nbytes()` and `close_now()`.
    """

    def __init__(self, settings: Settings, model: ModelHolder, media: MediaResolver):
        self.settings = settings
        self.limits = settings.limits
        self.model = model
        self.media = media
        self.jobs = JobManager(model.get, workers=settings.job_workers, write_interval_s=settings.write_interval_s,
                               on_frame=self._count_frame)
        self.frames_propagated = 0
        self.sessions: SessionStore[int, Any] = SessionStore(
            max_items=settings.max_sessions, max_bytes=self.limits.session_max_bytes, ttl_s=self.limits.session_ttl_s,
            size_of=lambda entry: entry.nbytes(), close=self._close_entry, busy=self._job_active)
        self.task_locks = KeyedLocks(wait_s=self.limits.task_lock_wait_s)
        self._closing = False

    def job_status(self, task_id: int) -> dict | None:
        job = self.jobs.get(task_id)
        return job.status() if job else None

    def active_sessions(self) -> int:
        return len(self.sessions)

    @property
    def _entries(self) -> dict[int, Any]:
        """Snapshot {task: entry} of the sessions held now (for tests and debugging; not marked as used)."""
        return {tid: e for tid in self.sessions.keys() if (e := self.sessions.peek(tid)) is not None}

    def drop(self, task_id: int) -> None:
        """Close the task's session (what an eviction or a restart does); the adapter rebuilds it on demand (LS: from
        the task's annotations)."""
        self.sessions.discard(task_id)

    def shutdown(self) -> None:
        self._closing = True
        self.jobs.shutdown()
        self.sessions.close_all()

    # ---- core --------------------------------------------------------------------------------
    def _push(self, entry: Any, changed: int, rollback: Callable[[], None], *,
              replay: bool = False, held: bool = False) -> tuple[Job | None, bool]:
        """Push the tracker's ledger into the engine and start propagation when needed (`changed`: how many
        prompts the caller folded into the ledger; `rollback` puts the ledger back as it was; `held`: a new job
        waits for `Job.release()`, which the caller sends once its answer is rendered).

        Returns the job that produces the task's current result (None: nothing to track) and whether it is new.
        If anything fails before the engine took the change, the ledger is put back as it was, so a retry of the
        same request is a change again (never "unchanged" with the prompt lost). If the engine fails half-way, the
        session is dropped and rebuilt from LS on the next request. The caller holds the task's lock."""
        tracker = entry.tracker
        job = self.jobs.get(tracker.task_id)
        if not changed:  # e.g. LS re-sending a saved annotation: keep the job that is already on it
            if job is not None and job.version == tracker.version and job.state in ("queued", "running", "done"):
                return job, False
            if not tracker.applied:
                return None, False
        try:
            old = self.jobs.cancel(tracker.task_id)  # never waits; a queued job ends at once
            # the engine must be free before new prompts go in; we hold only this task's lock while waiting
            if old is not None and not old.wait(self.limits.task_lock_wait_s):
                raise TaskBusy(f"task {tracker.task_id}: its running propagation did not stop within "
                               f"{self.limits.task_lock_wait_s:g} s (TASK_LOCK_WAIT_S); retry in a moment",
                               retry_after=2)
            predictor = self.model.get()
        except Exception:
            rollback()
            raise
        with tracker.lock:
            fixes = sorted({f for (_, f), p in tracker.ledger.prompts().items() if p.mask is not None})
            if replay and fixes and not tracker.applied:
                return self._replay(entry, fixes), True
            try:
                start = tracker.sync(predictor)
            except Exception:  # the engine may hold half of it: rebuild from LS next time rather than drift
                self.sessions.discard(tracker.task_id)
                raise
            if start is None:
                if not tracker.applied:
                    return None, False
                start = min(f for _, f in tracker.applied)  # the old job was cancelled or failed: run it again
            plan = tracker.passes(start)
        return self.jobs.start(tracker, plan, self._write, held=held), True

    def _replay(self, entry: Any, fixes: list[int]) -> Job:
        """Rebuild in the order the annotation was most likely made: prompts, propagate, then each correction
        (by frame) and forward from it, so frames before a correction come out as they were when it was made."""
        tracker, predictor = entry.tracker, self.model.get()

        def prompts_stage() -> list[Pass]:
            start = tracker.sync(predictor, upto=-1)
            return tracker.passes(start) if start is not None else []

        def fix_stage(k: int):
            def run() -> list[Pass]:
                start = tracker.sync(predictor, upto=k)
                return tracker.passes(start) if start is not None else []
            return run
        total = tracker.num_frames + sum(tracker.num_frames - k for k in fixes)
        return self.jobs.start_stages(tracker, [prompts_stage] + [fix_stage(k) for k in fixes], self._write, total)

    def _write(self, job: Job, final: bool) -> None:
        """Publish the job's growing result (runs on the job's thread, holding no lock of ours); the adapter's."""

    # ---- sessions ----------------------------------------------------------------------------
    def _session(self, tid: int, key: str, build: Callable[[], Any]) -> tuple[Any, bool]:
        """The task's session and whether `build` made it now: built when missing, or when it was built for another
        `key` (media and config). The caller holds the task's lock."""
        entry = self.sessions.get(tid)
        if entry is not None and entry.media == key and not entry.closed:
            return entry, False
        if entry is not None:
            self.sessions.discard(tid)
        return self.sessions.get_or_create(tid, build, wait_s=self.limits.task_lock_wait_s)

    def _job_active(self, tid: int) -> bool:
        job = self.jobs.get(tid)
        return job is not None and not job.finished.is_set()

    def _close_entry(self, tid: int, entry: Any) -> None:
        """Called by the session store outside its lock: stop the task's job without waiting, then free the engine
        session once the job has left it (nothing here blocks the evicting request). A job stopped before its final
        write is reported to `_job_stopped`, so the adapter can see that what was saved still reaches its tool."""
        job = self.jobs.get(tid)
        if job is not None and not job.finished.is_set() and job.version == entry.tracker.version:
            self.jobs.cancel(tid)
            self._job_stopped(tid)
        self.jobs.after(tid, lambda: close_when_idle(entry, in_use=lambda: self.task_locks.busy(tid)))

    def _job_stopped(self, tid: int) -> None:
        """Hook: the task's session was evicted while its job was still running (the adapter's)."""

    def _count_frame(self) -> None:
        self.frames_propagated += 1
def close_when_idle(entry: TaskEntry, *, in_use: Callable[[], bool] = lambda: False, retry_s: float = 0.5,
                    give_up_s: float = 600.0) -> None:
    """Close the entry's engine session once nothing uses it (no request holds its task, the engine session's lock
    is free); never blocks the caller: a busy session is retried every `retry_s` on a timer."""
    def attempt(left: float) -> None:
        lock = entry.tracker.session.lock
        if not in_use() and lock.acquire(blocking=False):
            try:
                entry.close_now()
            finally:
                lock.release()
        elif left > 0:
            timer = threading.Timer(retry_s, attempt, (left - retry_s,))
            timer.daemon = True
            timer.start()
        else:
            logger.warning("task %s: session still busy after %.0f s; closing it anyway", entry.tracker.task_id,
                           give_up_s)
            entry.close_now()
    attempt(give_up_s)
