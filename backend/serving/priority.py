"""CPU priority of the backend worker: below its /health process, so a probe never queues behind the engine.

On a busy machine the engine's OpenVINO threads (and the request threads' JSON work) keep every core runnable; a
/health process at the same priority waits for a core like any other thread, and an orchestrator that sees a slow or
failed probe restarts a healthy backend. Linux gives every thread its own nice value and a new thread inherits its
creator's, so `lower_worker_priority` renices every thread of this process once, after the health process was started
at the normal priority; OpenVINO's and gunicorn's threads created later inherit it. An unprivileged process may
raise its nice value but never lower it again, so this is one-way (and a no-op when the value is already higher).

Only CPU contention is affected: on an idle machine a niced worker runs exactly as fast.
"""
from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)


def lower_worker_priority(nice: int) -> int:
    """Set every thread of this process to at least `nice` (0-19); returns how many threads were changed."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return 0
    nice = min(int(nice), 19)
    changed: set[int] = set()
    for _ in range(3):  # a thread may start while we walk the list: walk again until nothing is new
        try:
            tids = {int(t) for t in os.listdir("/proc/self/task")}
        except OSError:  # not Linux: the process-wide call is all there is
            tids = {0}
        todo = tids - changed
        if not todo:
            break
        for tid in todo:
            try:
                if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                    os.setpriority(os.PRIO_PROCESS, tid, nice)
            except (ProcessLookupError, PermissionError, OSError):
                pass  # the thread ended meanwhile
            changed.add(tid)
    logger.info("worker threads at nice %d (WORKER_NICE): the /health process keeps the normal priority", nice)
    return len(changed)
