"""JobManager (backend/serving/jobs.py) alone: a fake tracker and a fake engine whose frames the test releases one by
one, so every claim about order, cancellation, concurrency and writes is checked at a known moment, not raced."""
from __future__ import annotations

import gc
import threading
import time
import weakref
from dataclasses import dataclass, field

import pytest

from backend.serving.jobs import JobManager, Pass

N = 6  # frames of the fake video


@dataclass
class FakeResult:
    frame: int


@dataclass
class FakeSession:
    num_frames: int = N


class FakeEngine:
    """propagate() yields one frame each time the test calls `step(task)` (or at once when `free`)."""

    def __init__(self, free: bool = False):
        self.free = free
        self.gates: dict[int, threading.Semaphore] = {}
        self.calls: list[tuple[int, int, bool]] = []  # (task, start, reverse)
        self.inside: set[int] = set()  # tasks whose propagation is open now
        self.max_inside = 0
        self.lock = threading.Lock()
        self.fail_at: dict[int, int] = {}

    def gate(self, task: int) -> threading.Semaphore:
        with self.lock:
            return self.gates.setdefault(task, threading.Semaphore(0))

    def step(self, task: int, frames: int = 1) -> None:
        for _ in range(frames):
            self.gate(task).release()

    def propagate(self, session, *, start: int, reverse: bool = False, objects=None):  # as VideoPredictor
        task = session.task
        with self.lock:
            self.calls.append((task, start, reverse))
            self.inside.add(task)
            self.max_inside = max(self.max_inside, len(self.inside))
        try:
            order = range(start, -1, -1) if reverse else range(start, session.num_frames)
            for f in order:
                if not self.free:
                    assert self.gate(task).acquire(timeout=30), f"task {task}: frame {f} never released"
                if self.fail_at.get(task) == f:
                    raise RuntimeError(f"engine broke on frame {f}")
                yield FakeResult(f)
        finally:
            with self.lock:
                self.inside.discard(task)


@dataclass
class FakeTracker:
    task_id: int
    version: int = 1
    session: FakeSession = field(default_factory=FakeSession)
    frames: list[int] = field(default_factory=list)

    def __post_init__(self):
        self.session.task = self.task_id

    def frames_in(self, plan):
        return sum(p.start + 1 if p.reverse else self.session.num_frames - p.start for p in plan)

    def record(self, result):
        self.frames.append(result.frame)


class Writes:
    def __init__(self, fail_first: int = 0):
        self.calls: list[tuple[int, int, bool]] = []  # (task, frames done, final)
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, job, final):
        with self.lock:
            self.calls.append((job.task_id, job.done, final))
            if len(self.calls) <= self.fail_first:
                raise ConnectionError("Label Studio is down")


def _until(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.005)


@pytest.fixture
def engine():
    return FakeEngine()


@pytest.fixture
def jobs(engine):
    manager = JobManager(lambda: engine, workers=2, write_interval_s=3600)
    yield manager
    for gate in list(engine.gates.values()):
        gate.release(100)
    manager.shutdown()


def test_a_job_propagates_every_pass_records_every_frame_and_writes_once_at_the_end(engine):
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    engine.free = True
    tracker, writes = FakeTracker(1), Writes()
    job = jobs.start(tracker, [Pass(3), Pass(2, reverse=True)], writes)
    assert job.total == (N - 3) + 3 and job.wait(10)
    assert job.state == "done" and job.done == job.total == 6 and job.error is None
    assert engine.calls == [(1, 3, False), (1, 2, True)]
    assert tracker.frames == [3, 4, 5, 2, 1, 0]
    assert writes.calls == [(1, 6, True)] and job.written == 6
    assert jobs.get(1) is job and jobs.running() == 0
    jobs.shutdown()


def test_a_new_job_for_a_task_cancels_the_running_one_between_frames(jobs, engine):
    old_tracker = FakeTracker(1)
    old = jobs.start(old_tracker, [Pass(0)], Writes())
    engine.step(1, 2)
    _until(lambda: old.done == 2, what="two frames")
    new = jobs.start(FakeTracker(1, version=2), [Pass(0)], Writes())
    engine.step(1)  # the old job sees the flag after its current frame and leaves the engine
    assert old.wait(5) and old.state == "cancelled" and old.done == 3
    assert jobs.get(1) is new
    engine.step(1, N)
    assert new.wait(10) and new.state == "done" and new.done == N


def test_cancel_never_blocks_the_caller_even_while_a_frame_is_being_computed(jobs, engine):
    """Callers cancel while holding the service's lock: cancel must flag and return, not wait for the frame."""
    job = jobs.start(FakeTracker(1), [Pass(0)], Writes())
    _until(lambda: job.state == "running", what="running")
    t0 = time.monotonic()
    jobs.cancel(1)
    assert time.monotonic() - t0 < 0.5, "cancel waited for the running frame"
    assert not job.finished.is_set()  # still inside its frame ...
    engine.step(1)
    assert job.wait(5) and job.state == "cancelled"  # ... and out at the next frame boundary


def test_workers_bound_how_many_jobs_run_at_once(engine):
    jobs = JobManager(lambda: engine, workers=2, write_interval_s=3600)
    try:
        started = [jobs.start(FakeTracker(t), [Pass(0)], Writes()) for t in (1, 2, 3)]
        _until(lambda: sum(j.state == "running" for j in started) == 2, what="two running")
        time.sleep(0.2)
        assert [j.state for j in started] == ["running", "running", "queued"]
        assert jobs.running() == 3  # queued jobs count as pending work
        engine.step(1, N)
        assert started[0].wait(5)
        _until(lambda: started[2].state == "running", what="the queued job to start")
        engine.step(2, N)
        engine.step(3, N)
        assert all(j.wait(10) and j.state == "done" for j in started)
        assert engine.max_inside == 2
    finally:
        jobs.shutdown()


def test_one_worker_runs_jobs_one_after_another(engine):
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    try:
        a = jobs.start(FakeTracker(1), [Pass(0)], Writes())
        b = jobs.start(FakeTracker(2), [Pass(0)], Writes())
        _until(lambda: a.state == "running", what="a running")
        time.sleep(0.2)
        assert b.state == "queued"
        engine.step(1, N)
        engine.step(2, N)
        assert a.wait(10) and b.wait(10) and engine.max_inside == 1
    finally:
        jobs.shutdown()


def test_a_cancelled_queued_job_ends_at_once_and_never_starts(engine):
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    try:
        a = jobs.start(FakeTracker(1), [Pass(0)], Writes())
        _until(lambda: a.state == "running", what="a running")
        queued_writes = Writes()
        b = jobs.start(FakeTracker(2), [Pass(0)], queued_writes)
        jobs.cancel(2)
        assert b.wait(0.5), "a queued job must finish at once when cancelled, not when a worker frees up"
        assert b.state == "cancelled"
        engine.step(1, N)
        assert a.wait(10) and a.state == "done"
        time.sleep(0.2)
        assert all(task != 2 for task, _, _ in engine.calls) and queued_writes.calls == []
    finally:
        jobs.shutdown()


def test_a_cancelled_queued_job_does_not_keep_its_tracker_alive(engine):
    """An evicted task's tracker (and its engine session) must be freed even while its job waits in the queue."""
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    try:
        a = jobs.start(FakeTracker(1), [Pass(0)], Writes())
        _until(lambda: a.state == "running", what="a running")
        tracker = FakeTracker(2)
        ref = weakref.ref(tracker)
        jobs.start(tracker, [Pass(0)], Writes())
        jobs.cancel(2)
        del tracker
        gc.collect()
        assert ref() is None, "the queued job still holds the evicted tracker"
        engine.step(1, N)
        assert a.wait(10)
    finally:
        jobs.shutdown()


def test_writes_every_interval_and_once_final(engine):
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=0.05)
    try:
        writes = Writes()
        job = jobs.start(FakeTracker(1), [Pass(0)], writes)
        for _ in range(N):
            engine.step(1)
            time.sleep(0.08)
        assert job.wait(10) and job.state == "done"
        finals = [c for c in writes.calls if c[2]]
        assert finals == [(1, N, True)] and writes.calls[-1] == (1, N, True)
        assert len(writes.calls) >= 3, writes.calls  # partial results reach LS while the job runs
    finally:
        jobs.shutdown()


def test_a_failed_write_is_reported_and_the_job_still_finishes(engine):
    engine.free = True
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    try:
        writes = Writes(fail_first=100)
        job = jobs.start(FakeTracker(1), [Pass(0)], writes)
        assert job.wait(60) and job.done == N
        assert job.state in ("done", "failed")
        assert "Label Studio is down" in job.status()["write_error"]
        assert job.status()["written_frames"] == 0
    finally:
        jobs.shutdown()


def test_an_engine_error_fails_the_job_with_its_message(engine):
    engine.free = True
    engine.fail_at[1] = 2
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    try:
        job = jobs.start(FakeTracker(1), [Pass(0)], Writes())
        assert job.wait(10) and job.state == "failed" and "frame 2" in job.error and job.done == 2
        assert job.status()["error"] == job.error
        # the worker survives: the next job runs
        engine.fail_at.clear()
        assert jobs.start(FakeTracker(2), [Pass(0)], Writes()).wait(10)
    finally:
        jobs.shutdown()


def test_stages_run_on_the_job_thread_in_order_and_refresh_the_version(engine):
    engine.free = True
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    tracker, seen = FakeTracker(1), []

    def stage(start):
        def run():
            seen.append((start, threading.current_thread().name))
            tracker.version += 1
            return [Pass(start)]
        return run
    try:
        job = jobs.start_stages(tracker, [stage(0), stage(4)], Writes(), total=N + 2)
        assert job.wait(10) and job.state == "done" and job.done == N + 2
        assert [s for s, _ in seen] == [0, 4] and all(name.startswith("propagate") for _, name in seen)
        assert job.version == tracker.version == 3
    finally:
        jobs.shutdown()


def test_finished_jobs_are_bounded():
    engine = FakeEngine(free=True)
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600, keep_finished=3)
    try:
        done = [jobs.start(FakeTracker(t), [Pass(0)], Writes()) for t in range(10)]
        assert all(j.wait(10) for j in done)
        jobs.start(FakeTracker(99), [Pass(0)], Writes()).wait(10)
        kept = [t for t in range(10) if jobs.get(t) is not None]
        assert len(kept) <= 3 and jobs.get(99) is not None
        assert kept == sorted(kept)[-len(kept):] and (not kept or kept[-1] == 9)  # the newest are kept
    finally:
        jobs.shutdown()


def test_shutdown_stops_running_and_queued_jobs(engine):
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    a = jobs.start(FakeTracker(1), [Pass(0)], Writes())
    b = jobs.start(FakeTracker(2), [Pass(0)], Writes())
    _until(lambda: a.state == "running", what="a running")
    stopper = threading.Thread(target=jobs.shutdown)
    stopper.start()
    engine.step(1)
    stopper.join(10)
    assert not stopper.is_alive()
    assert a.state == "cancelled" and b.state in ("queued", "cancelled")
    assert all(task != 2 for task, _, _ in engine.calls)


def test_a_held_job_computes_nothing_until_its_request_releases_it(engine):
    """An interactive request holds its new job while it renders the answer (2 cores: the answer must not share
    them with the next frame's memory attention); release() lets it run, and nothing is lost."""
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    engine.free = True
    tracker = FakeTracker(1)
    job = jobs.start(tracker, [Pass(0)], Writes(), held=True)
    time.sleep(0.3)
    assert engine.calls == [] and tracker.frames == [] and not job.finished.is_set()
    job.release()
    assert job.wait(10) and job.state == "done" and tracker.frames == list(range(N))
    jobs.shutdown()


def test_a_held_job_that_nobody_releases_runs_after_the_bound_and_a_cancel_ends_it_at_once(engine, monkeypatch):
    import backend.serving.jobs as jobs_mod
    monkeypatch.setattr(jobs_mod, "HOLD_MAX_S", 0.2)
    jobs = JobManager(lambda: engine, workers=1, write_interval_s=3600)
    engine.free = True
    late = jobs.start(FakeTracker(1), [Pass(0)], Writes(), held=True)  # its request died: never released
    assert late.wait(10) and late.state == "done"
    monkeypatch.setattr(jobs_mod, "HOLD_MAX_S", 60)
    held = jobs.start(FakeTracker(2), [Pass(0)], Writes(), held=True)
    _until(lambda: held.state == "running", what="the held job to reach the worker")
    t0 = time.monotonic()
    jobs.cancel(2)
    assert held.wait(10) and time.monotonic() - t0 < 5 and held.state == "cancelled"
    assert not any(task == 2 for task, _, _ in engine.calls)
    jobs.shutdown()
