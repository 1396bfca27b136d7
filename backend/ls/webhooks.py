"""Unauthenticated webhooks: LS's own ones must keep working, but a stranger must get no oracle and no amplifier.

Label Studio sends webhooks without the ML backend's basic auth, so a webhook that is neither authenticated (basic
auth) nor signed (WEBHOOK_SECRET in the `X-Webhook-Secret` header) is only a hint: "task T may have a new
annotation". The gate answers every such call the same (202 accepted, whatever the task, annotation or outcome),
keeps at most one pending hint per task (the newest annotation id wins, at most WEBHOOK_QUEUE_MAX tasks), and one
background thread handles them one at a time:
- at most one LS read per task per WEBHOOK_TASK_INTERVAL_S (a hint inside the interval waits, it is not lost);
- at most WEBHOOK_RATE_PER_MIN hints handled a minute over all tasks (token bucket), so cycling task ids cannot
  force more than that many rebuilds (media fetch, frame count, replay) a minute.
The handler re-reads the task and annotation from LS with the backend's own token: a forged payload cannot inject
prompts or media URLs.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from backend.serving.limits import Limits
from backend.serving.ratelimit import TokenBucket

logger = logging.getLogger(__name__)

ACTIONS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
Handler = Callable[[int, object], None]  # (task id, annotation id or None) -> None; raises are logged


def hint_of(body: Mapping) -> tuple[int, object] | None:
    """(task id, annotation id) named by a webhook body, or None when it names nothing we act on."""
    if body.get("action") not in ACTIONS:
        return None
    task, annotation = body.get("task"), body.get("annotation")
    tid = task.get("id") if isinstance(task, Mapping) else None
    if isinstance(tid, bool) or not isinstance(tid, int) or tid < 0:
        return None
    aid = annotation.get("id") if isinstance(annotation, Mapping) else None
    return tid, aid if isinstance(aid, int) and not isinstance(aid, bool) else None


class WebhookGate:
    def __init__(self, handler: Handler, limits: Limits, *, clock: Callable[[], float] = time.monotonic):
        self.handler, self.limits, self._clock = handler, limits, clock
        self.bucket = TokenBucket(limits.webhook_rate_per_min, clock=clock)
        self._pending: dict[int, object] = {}  # task -> newest annotation id (insertion order = arrival)
        self._last_read: dict[int, float] = {}  # task -> when we last read it from LS (pruned after the interval)
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.handled = self.dropped = 0

    def submit(self, body: Mapping) -> None:
        """Queue the hint a webhook body carries (if any). Never raises, never blocks, same effect for any outcome."""
        hint = hint_of(body)
        if hint is None:
            return
        tid, aid = hint
        with self._cond:
            if tid not in self._pending and len(self._pending) >= self.limits.webhook_queue_max:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    logger.warning("unauthenticated webhooks: %d tasks already waiting (WEBHOOK_QUEUE_MAX); dropped "
                                   "%d hints so far", len(self._pending), self.dropped)
                return
            self._pending[tid] = aid
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="webhook-gate", daemon=True)
                self._thread.start()
            self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _next_locked(self) -> tuple[int, object] | float:
        """The hint to handle now, or how long to wait for one."""
        now, interval = self._clock(), self.limits.webhook_task_interval_s
        for tid in [t for t, at in self._last_read.items() if now - at >= interval]:
            del self._last_read[tid]
        if not self._pending:
            return 60.0
        due = [(self._last_read.get(tid, now - interval) + interval, tid) for tid in self._pending]
        when, tid = min(due, key=lambda d: d[0])  # min is stable: among due tasks the oldest hint first
        if when > now:
            return when - now
        wait = self.bucket.wait_time()
        if wait > 0 or not self.bucket.take():
            return max(wait, 0.01)
        self._last_read[tid] = now
        return tid, self._pending.pop(tid)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopped:
                        return
                    nxt = self._next_locked()
                    if isinstance(nxt, tuple):
                        break
                    self._cond.wait(nxt)
            tid, aid = nxt
            try:
                self.handler(tid, aid)
            except Exception as e:  # the caller got its 202 long ago: the log is the only place to say it
                if self._stopped:  # shutting down: the jobs it would start are refused; LS's next save comes back
                    logger.info("unauthenticated webhook for task %s dropped: the backend is shutting down", tid)
                    continue
                logger.warning("unauthenticated webhook for task %s: %s", tid, e,
                               exc_info=not getattr(e, "status", None))
            finally:
                self.handled += 1
