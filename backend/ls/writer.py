"""Write a task's result into Label Studio as this model version's ONE prediction: serialised, idempotent, retried.

- Serialised: writes for one task hold a per-task write lock (only while talking to LS, never while backing off).
- Idempotent: the first write for a task (per session, so also after a restart) lists the task's predictions, keeps
  the newest one of our model version, deletes our other duplicates and updates the kept one; later writes update
  the remembered id (re-created if someone deleted it). Other model versions' predictions are never touched.
- Retried: when LS is unreachable or answers 5xx, a final write is retried with backoff (1 s doubling to 30 s) for
  up to LS_WRITE_RETRY_S, then gives up with the last error (the job status shows it). A partial write is not
  retried: the next partial or the final write carries newer masks anyway.
"""
from __future__ import annotations

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
        mine = sorted(int(p["id"]) for p in self.client.list_predictions(task_id)
                      if isinstance(p, dict) and p.get("model_version") == model_version
                      and isinstance(p.get("id"), int) and p.get("task", task_id) == task_id)
        for pid in mine[:-1]:
            try:
                self.client.delete_prediction(pid)
                logger.info("task %s: deleted duplicate prediction %s of model version %s", task_id, pid,
                            model_version)
            except BackendError as e:
                if e.status != 404:
                    raise
        return mine[-1] if mine else None
