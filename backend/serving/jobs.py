"""Background propagation jobs: one per task at a time, cancellable between frames, progress observable.

A job runs a tracker's propagation plan on a worker thread, records every frame into the tracker and calls
`writer` every `write_interval_s` and once at the end (the service writes the growing prediction into LS
there). Starting a job for a task cancels that task's running job first: the newest prompt wins.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

from backend.engine import FrameResult, VideoPredictor, VideoSession

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

    def cancel(self) -> None:
        self.cancel_event.set()

    def wait(self, timeout: float | None) -> bool:
        """Block until the job ends or `timeout` seconds pass; True when it ended."""
        return self.finished.wait(timeout)

    def status(self) -> dict:
        return {"task": self.task_id, "state": self.state, "frames_done": self.done, "frames_total": self.total,
                "error": self.error, "written_frames": self.written, "write_error": self.write_error,
                "started": self.started, "finished": self.finished_at}


class JobManager:
    def __init__(self, predictor: Callable[[], VideoPredictor], *, workers: int, write_interval_s: float,
                 on_frame: Callable[[], None] = lambda: None):
        self._predictor = predictor
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="propagate")
        self._jobs: dict[int, Job] = {}
        self._lock = threading.Lock()
        self.write_interval_s = write_interval_s
        self.on_frame = on_frame

    def get(self, task_id: int) -> Job | None:
        with self._lock:
            return self._jobs.get(task_id)

    def running(self) -> int:
        with self._lock:
            return sum(j.state in ("queued", "running") for j in self._jobs.values())

    def cancel(self, task_id: int, timeout: float = 30.0) -> None:
        """Cancel the task's job (if any) and wait for it to leave the engine."""
        job = self.get(task_id)
        if job is not None and not job.finished.is_set():
            job.cancel()
            if not job.wait(timeout):
                raise TimeoutError(f"the propagation job of task {task_id} did not stop within {timeout:.0f} s")

    def start(self, tracker: TaskTracker, plan: list[Pass], writer: Writer) -> Job:
        return self.start_stages(tracker, [lambda: plan], writer, tracker.frames_in(plan))

    def start_stages(self, tracker: TaskTracker, stages: list[Stage], writer: Writer, total: int) -> Job:
        """Run `stages` in order on a worker: each returns the passes to propagate after it ran."""
        self.cancel(tracker.task_id)
        job = Job(tracker.task_id, tracker.version, total)
        with self._lock:
            self._jobs[tracker.task_id] = job
        self._pool.submit(self._run, job, tracker, stages, writer)
        return job

    def shutdown(self) -> None:
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, job: Job, tracker: TaskTracker, stages: list[Stage], writer: Writer) -> None:
        job.state = "running"
        last_write = time.monotonic()
        try:
            predictor = self._predictor()
            for stage in stages:
                plan = stage()
                job.version = tracker.version
                for p in plan:
                    gen = predictor.propagate(tracker.session, start=p.start, reverse=p.reverse, objects=p.objects)
                    try:
                        for result in gen:
                            tracker.record(result)
                            self.on_frame()
                            job.done += 1
                            if job.cancel_event.is_set():
                                break
                            if time.monotonic() - last_write >= self.write_interval_s:
                                self._write(writer, job, final=False)
                                last_write = time.monotonic()
                    finally:
                        gen.close()
                    if job.cancel_event.is_set():
                        job.state = "cancelled"
                        logger.info("task %s: propagation cancelled after %d/%d frames", job.task_id, job.done,
                                    job.total)
                        return
            job.state = "done"
            job.total = job.done
            logger.info("task %s: propagated %d frames in %.1f s", job.task_id, job.done, time.time() - job.started)
            self._write(writer, job, final=True)
        except Exception as e:  # a job must never die silently: the status says why
            job.state, job.error = "failed", str(e) or type(e).__name__
            logger.exception("task %s: propagation failed", job.task_id)
        finally:
            job.finished_at = time.time()
            job.finished.set()

    @staticmethod
    def _write(writer: Writer, job: Job, *, final: bool) -> None:
        try:
            writer(job, final)
            job.written, job.write_error = job.done, None
        except Exception as e:
            job.write_error = str(e) or type(e).__name__
            logger.warning("task %s: could not write the prediction into Label Studio: %s", job.task_id, e)
