"""Background propagation jobs: one per task at a time, cancellable between frames, progress observable.

A job runs a tracker's propagation plan on a worker thread, records every frame into the tracker and calls
`writer` every `write_interval_s` and once at the end (the service writes the growing prediction into LS
there). Starting a job for a task cancels that task's running job first: the newest prompt wins.

Cancelling never blocks: `cancel` flags the job and returns; a job still in the queue is finished at once (it never
starts) and drops its work (tracker, stages, writer), so a queued job keeps no evicted tracker alive. Callers that
need the engine free wait on `Job.wait` with a timeout, holding no shared lock. `after` runs a callback once the
task's job has left the engine (the service closes an evicted session there). Finished jobs are kept for
`/jobs/<task>` up to `keep_finished`, oldest dropped first.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from backend.engine import Aborted, FrameResult, VideoPredictor, VideoSession

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class Pass:
    """One propagation run: from 0-based `start`, forward or backward (to the end or to frame 0)."""

    start: int
    reverse: bool = False
    objects: tuple | None = None  # the objects to (re)track; None: all (the engine's `propagate(objects=)`)


class TaskTracker(Protocol):
    """What a job needs of an adapter's per-task tracker (the LS one is `backend.ls.tasktrack.TaskTracker`)."""

    task_id: int
    version: int
    session: VideoSession

    def frames_in(self, plan: list[Pass]) -> int: ...

    def record(self, result: FrameResult) -> None: ...


Writer = Callable[["Job", bool], None]  # (job, final) -> None
Stage = Callable[[], list[Pass]]  # runs on the job thread before its passes (e.g. pushes prompts into the engine)


HOLD_MAX_S = 2.0  # longest a held job waits for its request's answer (a request that dies cannot stall it)


@dataclass
class Job:
    task_id: int
    version: int
    total: int
    state: str = "queued"  # queued | running | done | cancelled | failed
    done: int = 0
    error: str | None = None
    written: int = 0  # frames covered by the last write into LS
    write_error: str | None = None
    started: float = field(default_factory=time.time)
    finished_at: float | None = None
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    finished: threading.Event = field(default_factory=threading.Event, repr=False)
    # cleared while the request that started the job renders its answer (`JobManager.start(held=True)`): the job
    # computes nothing until `release()` (or HOLD_MAX_S), so the answer does not share 2 cores with propagation
    released: threading.Event = field(default_factory=threading.Event, repr=False)
    # (tracker, stages, writer) until the job ends or is cancelled in the queue; the only reference to the tracker
    _work: tuple | None = field(default=None, repr=False)
    _on_finish: list = field(default_factory=list, repr=False)

    def cancel(self) -> None:
        self.cancel_event.set()
        self.released.set()

    def release(self) -> None:
        """The answer that started this job is out: let it propagate (idempotent)."""
        self.released.set()

    def wait(self, timeout: float | None) -> bool:
        """Block until the job ends or `timeout` seconds pass; True when it ended."""
        return self.finished.wait(timeout)

    def status(self) -> dict:
        return {"task": self.task_id, "state": self.state, "frames_done": self.done, "frames_total": self.total,
                "error": self.error, "written_frames": self.written, "write_error": self.write_error,
                "started": self.started, "finished": self.finished_at}


class JobManager:
    def __init__(self, predictor: Callable[[], VideoPredictor], *, workers: int, write_interval_s: float,
                 on_frame: Callable[[], None] = lambda: None, keep_finished: int = 1024):
        self._predictor = predictor
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="propagate")
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self.write_interval_s = write_interval_s
        self.on_frame = on_frame
        self.keep_finished = keep_finished

    def get(self, task_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(task_id)

    def running(self) -> int:
        with self._lock:
            return sum(j.state in ("queued", "running") for j in self._jobs.values())

    def cancel(self, task_id: int) -> Job | None:
        """Ask the task's job (if any) to stop; never waits. A queued job ends at once without starting.

        Returns the job, so a caller that needs the engine free can `wait` on it (holding no shared lock)."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is None or job.finished.is_set():
                return job
            job.cancel()  # also releases a held job, so it ends at once
            if job.state != "queued":
                return job
            job.state, job._work = "cancelled", None
            callbacks = self._finish_locked(job)
        logger.info("task %s: queued propagation cancelled before it started", task_id)
        _run_callbacks(callbacks, task_id)
        return job

    def after(self, task_id: int, fn: Callable[[], None]) -> None:
        """Call `fn` once the task's current job has left the engine (now, if there is none or it ended)."""
        with self._lock:
            job = self._jobs.get(task_id)
            if job is not None and not job.finished.is_set():
                job._on_finish.append(fn)
                return
        _run_callbacks([fn], task_id)

    def start(self, tracker: TaskTracker, plan: list[Pass], writer: Writer, *, held: bool = False) -> Job:
        return self.start_stages(tracker, [lambda: plan], writer, tracker.frames_in(plan), held=held)

    def start_stages(self, tracker: TaskTracker, stages: list[Stage], writer: Writer, total: int, *,
                     held: bool = False) -> Job:
        """Run `stages` in order on a worker: each returns the passes to propagate after it ran.

        held: the job waits for `Job.release()` (at most HOLD_MAX_S) before it computes anything; an interactive
        request releases it once its answer is rendered."""
        self.cancel(tracker.task_id)
        job = Job(tracker.task_id, tracker.version, total, _work=(tracker, stages, writer))
        if not held:
            job.released.set()
        with self._lock:
            self._jobs.pop(tracker.task_id, None)  # re-insert: the dict's order is the order of starts
            self._jobs[tracker.task_id] = job
            self._bound_locked()
        self._pool.submit(self._run, job)
        return job

    def shutdown(self) -> None:
        """Cancel every job (queued ones end at once, with their callbacks) and wait for running ones to stop."""
        with self._lock:
            tids = list(self._jobs)
        for tid in tids:
            self.cancel(tid)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.cancel_event.is_set() or job._work is None:  # cancelled while queued: already finished
                return
            job.state = "running"
            tracker, stages, writer = job._work
        if not job.released.wait(HOLD_MAX_S):
            logger.warning("task %s: the request that started this propagation did not release it within %g s; "
                           "propagating anyway", job.task_id, HOLD_MAX_S)
        last_write = time.monotonic()
        try:
            if job.cancel_event.is_set():  # cancelled while held
                job.state = "cancelled"
                return
            predictor = self._predictor()
            for stage in stages:
                plan = stage()
                job.version = tracker.version
                for p in plan:
                    gen = predictor.propagate(tracker.session, start=p.start, reverse=p.reverse, objects=p.objects)
                    try:  # a cancel stops the frame in flight within a node (a click must not wait for a frame)
                        with _stoppable(predictor, job.cancel_event):
                            for result in gen:
                                tracker.record(result)
                                self.on_frame()
                                job.done += 1
                                if job.cancel_event.is_set():
                                    break
                                if time.monotonic() - last_write >= self.write_interval_s:
                                    self._write(writer, job, final=False)
                                    last_write = time.monotonic()
                    except Aborted:
                        pass  # cancelled mid-frame: that frame stays untracked, handled as cancelled below
                    finally:
                        gen.close()
                    if job.cancel_event.is_set():
                        job.state = "cancelled"
                        logger.info("task %s: propagation cancelled after %d/%d frames", job.task_id, job.done,
                                    job.total)
                        return
            job.total = job.done
            logger.info("task %s: propagated %d frames in %.1f s", job.task_id, job.done, time.time() - job.started)
            self._write(writer, job, final=True)  # the writer retries LS failures (see backend.ls.writer)
            job.state = "done"
        except OSError as e:  # the disk (spill folder): say what to fix, without the server's paths
            job.state = "failed"
            job.error = (f"writing to disk failed ({e.strerror or type(e).__name__}); check that DATA_DIR is "
                         "writable and has free space, then prompt again")
            logger.exception("task %s: propagation failed", job.task_id)
        except Exception as e:  # a job must never die silently: the status says why
            job.state, job.error = "failed", str(e) or type(e).__name__
            logger.exception("task %s: propagation failed", job.task_id)
        finally:
            del tracker, stages
            with self._lock:
                job._work = None
                callbacks = self._finish_locked(job)
            _run_callbacks(callbacks, job.task_id)

    def _finish_locked(self, job: Job) -> list[Callable[[], None]]:
        job.finished_at = time.time()
        job.finished.set()
        callbacks, job._on_finish = job._on_finish, []
        self._bound_locked()
        return callbacks

    def _bound_locked(self) -> None:
        done = [tid for tid, j in self._jobs.items() if j.finished.is_set()]
        for tid in done[:max(0, len(done) - self.keep_finished)]:  # dicts keep insertion order: oldest first
            del self._jobs[tid]

    @staticmethod
    def _write(writer: Writer, job: Job, *, final: bool) -> None:
        try:
            writer(job, final)
            job.written, job.write_error = job.done, None
        except Exception as e:
            job.write_error = str(e) or type(e).__name__
            logger.warning("task %s: could not write the prediction into Label Studio: %s", job.task_id, e)


def _stoppable(predictor: object, event: threading.Event):
    """The engine's stop_on(event) (runs on this thread stop at a node once the job is cancelled); engines without it
    (test fakes) stop between frames only."""
    stop_on = getattr(predictor, "stop_on", None)
    return stop_on(event) if stop_on is not None else contextlib.nullcontext()


def _run_callbacks(callbacks: list[Callable[[], None]], task_id: int) -> None:
    for fn in callbacks:
        try:
            fn()
        except Exception:
            logger.exception("task %s: a job-end callback failed", task_id)
