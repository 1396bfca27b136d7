"""Write a task's result into Label Studio as this model version's ONE prediction: serialised, idempotent, retried.

- Serialised: writes for one task hold a per-task write lock (only while talking to LS, never while backing off).
- Idempotent: the first write for a task (per session, so also after a restart) lists the task's predictions, keeps
  the newest one of our model version, deletes our other duplicates and updates the kept one; later writes update
  the remembered id (re-created if someone deleted it). Other model versions' predictions are never touched.
- Retried: when LS is unreachable or answers 5xx, a final write is retried with backoff (1 s doubling to 30 s) for
  up to LS_WRITE_RETRY_S, then gives up with the last error (the job status shows it). A partial write is not
  retried: the next partial or the final write carries newer masks anyway.
- Reconciled: LS stores a batch /predict answer as a prediction of our model version by itself, after we answered,
  beside the one our job writes. `reconcile_later` looks again a few times over the next half minute and deletes
  every duplicate of our version but the one we keep.
"""
from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from backend.ls.lsclient import LabelStudioClient, LabelStudioUnavailable
from backend.serving.errors import BackendError
from backend.serving.locks import KeyedLocks

logger = logging.getLogger(__name__)


class PredictionWriter:
    def __init__(self, client: LabelStudioClient, *, retry_s: float, lock_wait_s: float = 120.0,
                 clock: Callable[[], float] = time.monotonic, first_delay_s: float = 1.0, max_delay_s: float = 30.0):
        self.client = client
        self.retry_s, self.first_delay_s, self.max_delay_s = retry_s, first_delay_s, max_delay_s
        self._locks = KeyedLocks(wait_s=lock_wait_s, setting="another write of the same task")
        self._clock = clock
        self._later = _Later()

    def write(self, task_id: int, result: list[dict], model_version: str, *, known_id: int | None, final: bool,
              stop: threading.Event | None = None) -> int:
        """Create or update the task's prediction; returns its id. Raises the last BackendError when it gives up."""
        stop = stop or threading.Event()
        deadline = self._clock() + (self.retry_s if final else 0.0)
        delay, attempt = self.first_delay_s, 1
        while True:
            try:
                with self._locks.hold(task_id):
                    return self._write_once(task_id, result, model_version, known_id)
            except LabelStudioUnavailable as e:
                if self._clock() + delay > deadline or stop.is_set():
                    raise
                logger.warning("task %s: writing the prediction failed (attempt %d: %s); retrying in %.0f s",
                               task_id, attempt, e, delay)
                if stop.wait(delay):  # a newer job took over: it writes newer masks
                    raise
                delay, attempt = min(delay * 2, self.max_delay_s), attempt + 1
                known_id = None  # LS may have stored a create whose answer we lost: look again

    def reconcile(self, task_id: int, model_version: str, keep: int | None) -> int | None:
        """Delete our duplicates for the task, keeping `keep` when it still exists, else the newest; its id."""
        with self._locks.hold(task_id):
            mine = self._mine(task_id, model_version)
            if not mine:
                return None
            chosen = keep if keep in mine else mine[-1]
            self._delete(task_id, [p for p in mine if p != chosen], model_version)
            return chosen

    def reconcile_later(self, task_id: int, fn: Callable[[int], None], delays_s: tuple[float, ...] = (3, 10, 30)):
        """Call fn(task_id) after each of `delays_s` seconds, on one background thread (bounded queue)."""
        self._later.add(task_id, fn, delays_s)

    def _mine(self, task_id: int, model_version: str) -> list[int]:
        return sorted(int(p["id"]) for p in self.client.list_predictions(task_id)
                      if isinstance(p, dict) and p.get("model_version") == model_version
                      and isinstance(p.get("id"), int) and p.get("task", task_id) == task_id)

    def _delete(self, task_id: int, ids: list[int], model_version: str) -> None:
        for pid in ids:
            try:
                self.client.delete_prediction(pid)
                logger.info("task %s: deleted duplicate prediction %s of model version %s", task_id, pid,
                            model_version)
            except BackendError as e:
                if e.status != 404:
                    raise

    def _write_once(self, task_id: int, result: list[dict], model_version: str, known_id: int | None) -> int:
        if known_id is None:
            known_id = self._adopt(task_id, model_version)
        if known_id is not None:
            try:
                self.client.update_prediction(known_id, result, score=None, model_version=model_version)
                return known_id
            except BackendError as e:
                if e.status != 404:
                    raise
                logger.info("task %s: prediction %s was deleted in LS; creating a new one", task_id, known_id)
        return int(self.client.create_prediction(task_id, result, score=None, model_version=model_version)["id"])

    def _adopt(self, task_id: int, model_version: str) -> int | None:
        """Keep the newest of our predictions for the task, delete our other duplicates; its id, or None."""
        mine = self._mine(task_id, model_version)
        self._delete(task_id, mine[:-1], model_version)
        return mine[-1] if mine else None


class _Later:
    """One daemon thread running (task, fn) calls at set times; at most `max_items` pending (latest dropped)."""

    def __init__(self, max_items: int = 4096):
        self.max_items = max_items
        self._heap: list = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, task_id: int, fn: Callable[[int], None], delays_s: tuple[float, ...]) -> None:
        now = time.monotonic()
        with self._cond:
            for d in delays_s:
                heapq.heappush(self._heap, (now + d, next(self._seq), task_id, fn))
            while len(self._heap) > self.max_items:
                self._heap.remove(max(self._heap))
                heapq.heapify(self._heap)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="ls-reconcile", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, task_id, fn = heapq.heappop(self._heap)
            try:
                fn(task_id)
            except Exception as e:
                logger.warning("task %s: reconciling predictions failed: %s", task_id, e)
