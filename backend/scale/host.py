"""What one tracking replica runs: an adapter's tracking service behind a small task-keyed interface (no Ray here).

A replica holds the engine, the per-task sessions, the feature cache and the background propagation jobs, and
writes its results into the annotation tool itself, exactly as the single-process backend does: this wraps one
service per replica (built by the factory the wiring injects: `backend.serve_app` passes the Label Studio
adapter's `backend.ls.factory.build_tracking_service`) and adds what a replica needs on top:

- `open(task)` / `TaskHandle.__del__`: the session handle Serve's multiplexer keeps per task (its LRU is the
  bound, `MAX_SESSIONS` per replica). Opening is instant (the session itself is built, or rebuilt from the
  task's annotations in LS, by the first request that needs it); closing hands the task to an evictor thread
  and returns at once, so evicting a task whose job is still running never blocks requests for other tasks.
- `stats()`: sessions, running and queued jobs, requests in flight, for metrics and for every answer.
- replica id in job status, so `GET /jobs/<task>` shows where a task lives.

The service's own LRU is left at twice `MAX_SESSIONS` as a backstop only; both evict the same way
(`TrackingCore.drop`: the job is cancelled without waiting and the session closes once the job has left it).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from backend.serving.jobs import JobManager
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.settings import Settings

logger = logging.getLogger(__name__)


class ReplicaService(Protocol):
    """What a replica serves: an adapter's service on the shared tracking core (`backend.serving.tracking.TrackingCore`:
    sessions, jobs, model, media) with the adapter's protocol entry points, which the replica forwards as they are
    (e.g. `backend.ls.service.TrackingService`)."""

    model: ModelHolder
    media: MediaResolver
    jobs: JobManager
    frames_propagated: int

    def job_status(self, task_id: int) -> dict | None: ...

    def active_sessions(self) -> int: ...

    def drop(self, task_id: int) -> None: ...

    def shutdown(self) -> None: ...

    def predict(self, body: Mapping) -> dict: ...

    def webhook(self, body: Mapping, *, trusted: bool = True) -> dict: ...

    def setup(self, body: Mapping) -> dict: ...


ServiceFactory = Callable[[Settings], ReplicaService]  # module-level, so Ray pickles it by reference


class TaskHandle:
    """Serve's multiplexed "model" for one task: a ticket saying this replica holds the task's session."""

    def __init__(self, host: SessionHost, task_id: int, generation: int):
        self.host, self.task_id, self.generation = host, task_id, generation

    def __del__(self):  # Serve's LRU eviction calls this (in an executor); must stay quick
        host, self.host = self.host, None
        if host is not None:
            host.release(self)


class SessionHost:
    def __init__(self, settings: Settings, replica_id: str, service_factory: ServiceFactory):
        self.settings = settings
        self.replica_id = replica_id
        # the service's own LRU is a backstop only: Serve's multiplexer evicts at MAX_SESSIONS (see above)
        self.service = service_factory(dataclasses.replace(settings, max_sessions=2 * settings.max_sessions))
        self._lock = threading.Lock()
        self._generation: dict[int, int] = {}  # task -> generation of its newest handle
        self._held: set[int] = set()
        self._in_flight = 0
        self._evicting = 0
        self.evictions = 0
        self._evictor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evict")

    # ---- sessions (Serve's multiplexer calls these) ------------------------------------------
    def open(self, task_id: int) -> TaskHandle:
        with self._lock:
            gen = self._generation.get(task_id, 0) + 1
            self._generation[task_id] = gen
            self._held.add(task_id)
        return TaskHandle(self, task_id, gen)

    def release(self, handle: TaskHandle) -> None:
        """Evict a task's session in the background: cancel its job, then close it (unless reopened since)."""
        with self._lock:
            if self._generation.get(handle.task_id) != handle.generation:
                return  # reopened since: the newer handle owns the session
            self._held.discard(handle.task_id)
            self._evicting += 1
        self._evictor.submit(self._close, handle)

    def _close(self, handle: TaskHandle) -> None:
        tid, service = handle.task_id, self.service
        try:
            with self._lock:
                if self._generation.get(tid) != handle.generation:
                    return  # reopened since: the newer handle owns the session
                self._generation.pop(tid, None)
            service.drop(tid)  # cancels its job without waiting; the engine session closes once the job left it
            self.evictions += 1
            logger.info("replica %s: task %s evicted", self.replica_id, tid)
        except Exception:
            logger.exception("replica %s: evicting task %s failed", self.replica_id, tid)
        finally:
            with self._lock:
                self._evicting -= 1

    # ---- the work (each call is for one task; the caller runs it on a worker thread) ------------------------
    def call(self, fn: Callable[[], object]) -> object:
        with self._lock:
            self._in_flight += 1
        try:
            return fn()
        finally:
            with self._lock:
                self._in_flight -= 1

    def predict(self, body: Mapping) -> dict:
        """One task (the front splits batches): its result dict, as in the service's predict `results`."""
        return self.call(lambda: self.service.predict(body)["results"][0])

    def webhook(self, body: Mapping, trusted: bool) -> dict:
        return self.call(lambda: self.service.webhook(body, trusted=trusted))

    def setup(self, body: Mapping) -> dict:
        return self.call(lambda: self.service.setup(body))

    def job_status(self, task_id: int) -> dict | None:
        status = self.service.job_status(task_id)
        return dict(status, replica=self.replica_id) if status is not None else None

    def cancel(self, task_id: int) -> dict | None:
        job = self.call(lambda: self.service.jobs.cancel(task_id))  # never waits
        if job is not None:
            job.wait(10.0)  # the frame in flight finishes, holding no lock; then the status says "cancelled"
        return self.job_status(task_id)

    # ---- observation --------------------------------------------------------------------------
    def health(self) -> dict:
        model = self.service.model
        return {"state": model.state, "error": model.error, "model": model.name, "model_version": model.version,
                "random_weights": bool(model.manifest.get("random_weights"))}

    def stats(self) -> dict:
        service = self.service
        with self._lock:
            held, in_flight, evicting = sorted(self._held), self._in_flight, self._evicting
        states = [job.state for job in (service.jobs.get(t) for t in held) if job is not None]
        model = service.model
        return {"replica": self.replica_id, "sessions": service.active_sessions(), "tasks": held,
                "running_jobs": states.count("running"), "queued_jobs": states.count("queued"),
                "requests_in_flight": in_flight, "evicting": evicting, "evictions": self.evictions,
                "frames_propagated": service.frames_propagated,
                "feature_cache_bytes": model.get(0).features.nbytes if model.state == "ready" else 0,
                "media_cache_bytes": service.media.cache.nbytes}

    def shutdown(self) -> None:
        self._evictor.shutdown(wait=False, cancel_futures=True)
        self.service.shutdown()
