"""The Label Studio side of the product, without HTTP: /setup, /predict, /webhook and job status as methods.

Flow of an interactive prompt: find (or rebuild from the task's annotations) the task's tracker, fold the context's
regions into its prompt ledger, push the changes into the engine, start a background job that propagates from the
earliest changed frame (cancelling the task's older job), wait up to the time budget, answer with what is tracked
so far; the job goes on and writes the complete result into LS as this model version's prediction for the task.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from backend.ls import taskio
from backend.ls.errors import BadRequest, BackendError
from backend.ls.labelconfig import TaskShape, VideoShape, parse_label_config
from backend.ls.lsclient import LabelStudioClient
from backend.ls.prompts import mask_differs, parse_brush_region_id
from backend.ls.regions import BrushRegion, Region, VideoRectRegion, parse_regions
from backend.ls.rle import rle_to_mask
from backend.ls.tasktrack import TaskTracker, mask_digest
from backend.serving.jobs import Job, JobManager, Pass
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    tracker: TaskTracker
    media: str
    pins: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    reference: dict[str, dict] = field(default_factory=dict)  # our earlier prediction's results by region id


class TrackingService:
    def __init__(self, settings: Settings, model: ModelHolder, media: MediaResolver,
                 client: LabelStudioClient | None):
        self.settings = settings
        self.model = model
        self.media = media
        self.client = client
        self.jobs = JobManager(model.get, workers=settings.job_workers, write_interval_s=settings.write_interval_s,
                               on_frame=self._count_frame)
        self.frames_propagated = 0
        self._entries: OrderedDict[int, _Entry] = OrderedDict()
        self._configs: dict[str, TaskShape] = {}
        self._project_configs: dict[str, str] = {}
        self._prediction_ids: dict[int, int] = {}
        self._lock = threading.RLock()
        self._task_locks: dict[int, threading.Lock] = {}

    # ---- protocol entry points ---------------------------------------------------------------
    def setup(self, body: Mapping) -> dict:
        """Remember the project's label config (webhooks may not carry it); never loads anything heavy."""
        project, schema = str(body.get("project") or "").split(".")[0], body.get("schema")
        if isinstance(schema, str) and schema.strip():
            self.shape_of(schema)  # a config we cannot serve is refused now, where LS shows the message
            if project:
                self._project_configs[project] = schema
        return {"model_version": self.model.version}

    def predict(self, body: Mapping) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest("'tasks' must be a non-empty list of LS tasks")
        shape = self.shape_of(self._config_of(body))
        params = body.get("params") if isinstance(body.get("params"), Mapping) else {}
        context = params.get("context")
        deadline = time.monotonic() + self.settings.predict_time_budget_s
        if context is not None:
            if not isinstance(context, Mapping) or not isinstance(context.get("result"), list) \
                    or not context["result"]:
                raise BadRequest("context.result is empty: draw a keypoint, rectangle or brush region to prompt")
            return {"results": [self._interactive(tasks[0], shape, context["result"], deadline)]}
        return {"results": [self._batch_one(task, shape, deadline) for task in tasks]}

    def webhook(self, body: Mapping, *, trusted: bool = True) -> dict:
        """ANNOTATION_CREATED / ANNOTATION_UPDATED: corrections and new prompts re-propagate in the background.

        An untrusted call (LS sends webhooks without the backend's basic auth) only names the task and annotation:
        both are re-read from LS with our own token, so a forged payload cannot inject prompts or media URLs.
        """
        action = body.get("action")
        if action not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            return {"status": "ignored", "action": action}
        task, annotation = body.get("task"), body.get("annotation")
        if not isinstance(task, Mapping) or not isinstance(annotation, Mapping):
            raise BadRequest(f"{action} webhook needs 'task' and 'annotation' objects")
        project = body.get("project") if isinstance(body.get("project"), Mapping) else {}
        if not trusted:
            if self.client is None:
                raise BackendError("unauthenticated webhook and no LABEL_STUDIO_URL to verify it with; set "
                                   "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY", status=401)
            task = self.client.get_task(taskio.task_id_of(task))
            annotation = next((a for a in task.get("annotations") or [] if a.get("id") == annotation.get("id")), None)
            if annotation is None:
                raise BadRequest(f"task {task.get('id')} has no annotation {body['annotation'].get('id')!r}")
            project = self.client.get_project(int(task["project"]))
        config = project.get("label_config") or self._project_configs.get(str(project.get("id") or task.get("project")))
        if not config and self.client is not None and task.get("project"):
            config = self.client.get_project(int(task["project"])).get("label_config")
        if not config:
            raise BadRequest("the webhook carries no label config and this project never called /setup; "
                             "reconnect the ML backend in the project settings")
        shape = self.shape_of(config)
        results = [r for r in annotation.get("result") or [] if isinstance(r, dict)]
        if not taskio.has_prompt_tools(results, shape):
            return {"status": "no prompts"}
        task = dict(task, annotations=[annotation], drafts=[])
        with self._task_lock(taskio.task_id_of(task)):
            entry = self._entry(task, shape)
            _, started = self._apply(entry, results, interactive=False)
        return {"status": "propagating" if started else "unchanged", "task": entry.tracker.task_id}

    def job_status(self, task_id: int) -> dict | None:
        job = self.jobs.get(task_id)
        return job.status() if job else None

    def active_sessions(self) -> int:
        return len(self._entries)

    def shutdown(self) -> None:
        self.jobs.shutdown()
        with self._lock:
            for tid in list(self._entries):
                self._drop(tid)

    # ---- modes -------------------------------------------------------------------------------
    def _interactive(self, task: Mapping, shape: TaskShape, context: list, deadline: float) -> dict:
        tid = taskio.task_id_of(task)
        with self._task_lock(tid):
            entry = self._entry(task, shape)
            job, _ = self._apply(entry, context, interactive=True)
        if job is not None:  # the clicked frame is ready now (sync); by default the click does not wait for more
            job.wait(max(0.0, min(deadline - time.monotonic(), self.settings.interactive_wait_s)))
        return self._prediction(entry.tracker)

    def _batch_one(self, task: object, shape: TaskShape, deadline: float) -> dict:
        """Never raises: a task we cannot serve gets an empty result and a log line saying why."""
        try:
            tid = taskio.task_id_of(task)
            with self._lock:
                entry = self._entries.get(tid)
            results = taskio.prompt_results(task)
            if entry is None and not taskio.has_prompt_tools(results, shape):
                return {"result": [], "model_version": self.model.version}
            with self._task_lock(tid):
                with self._lock:
                    existed = tid in self._entries
                entry = self._entry(task, shape)  # a new entry has applied the task's annotation already
                job = self._apply(entry, results, interactive=False)[0] if results and existed else None
            job = job or self.jobs.get(tid)
            if job is not None:
                job.wait(max(0.0, deadline - time.monotonic()))
            return self._prediction(entry.tracker)
        except Exception as e:  # batch must never crash LS's loop over tasks
            level = logging.WARNING if isinstance(e, BackendError) else logging.ERROR
            logger.log(level, "batch predict: task %s skipped: %s", getattr(task, "get", lambda k: None)("id"), e,
                       exc_info=not isinstance(e, BackendError))
            return {"result": [], "model_version": self.model.version}

    # ---- core --------------------------------------------------------------------------------
    def _apply(self, entry: _Entry, raw: list, *, interactive: bool,
               replay: bool = False) -> tuple[Job | None, bool]:
        """Fold LS results into the ledger, push changes into the engine, start propagation when needed.

        Returns the job that produces the task's current result (None: nothing to track) and whether it is new."""
        tracker = entry.tracker
        regions = parse_regions(raw, tracker.shape, num_frames=tracker.num_frames, frame_size=tracker.size)
        regions = [self._strip_emitted(r, entry) for r in regions]
        with tracker.lock:
            before = dict(tracker.ledger.entries), dict(tracker.book.labels), dict(tracker.book.by_key)
            try:
                masks_on = self._reference_masks(entry) if replay else tracker.masks_on
                changed = tracker.ledger.upsert(regions, tracker.book, masks_on,
                                                lambda r: self._is_correction(r, entry), replay=replay)
                if interactive:
                    for rtype, label in {(_rtype(r), r.label) for r in regions}:
                        changed += tracker.ledger.remove_missing(regions, rtype, label)
            except Exception:  # nothing reached the engine yet: put the ledger back as it was
                tracker.ledger.entries, tracker.book.labels, tracker.book.by_key = before
                raise
            for res in raw:
                if isinstance(res, dict) and res.get("type") in _ECHOED and res.get("id") in tracker.ledger.entries:
                    tracker.prompt_regions[res["id"]] = dict(res, origin="prediction")
        job = self.jobs.get(tracker.task_id)
        if not changed:  # e.g. LS re-sending a saved annotation: keep the job that is already on it
            if job is not None and job.version == tracker.version and job.state in ("queued", "running", "done"):
                return job, False
            if not tracker.applied:
                return None, False
        self.jobs.cancel(tracker.task_id)  # outside the tracker lock: the job needs it to finish its frame
        predictor = self.model.get()
        with tracker.lock:
            fixes = sorted({f for (_, f), p in tracker.ledger.prompts().items() if p.mask is not None})
            if replay and fixes and not tracker.applied:
                return self._replay(entry, fixes), True
            try:
                start = tracker.sync(predictor)
            except Exception:  # the engine may hold half of it: rebuild from LS next time rather than drift
                with self._lock:
                    self._drop(tracker.task_id)
                raise
            if start is None:
                if not tracker.applied:
                    return None, False
                start = min(f for _, f in tracker.applied)  # the old job was cancelled or failed: run it again
            plan = tracker.passes(start)
        return self.jobs.start(tracker, plan, self._write), True

    def _replay(self, entry: _Entry, fixes: list[int]) -> Job:
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

    def _is_correction(self, region: BrushRegion, entry: _Entry) -> bool:
        ours = parse_brush_region_id(region.id)
        if ours is None:
            return True  # a mask drawn by hand is a prompt
        # accepted output if it is any mask we produced for that frame, or within tolerance of what we track now or
        # of our stored prediction (an annotation saved before a re-propagation still holds the older masks)
        if mask_digest(np.packbits(region.mask.ravel())) in entry.tracker.emitted_digests.get(ours, ()):
            return False
        known = [entry.tracker.mask(*ours)]
        if region.id in entry.reference:
            known.append(_decode(entry.reference[region.id]))
        known = [m for m in known if m is not None]
        return bool(known) and all(mask_differs(region.mask, m) for m in known)

    def _reference_masks(self, entry: _Entry):
        """frame -> {object: mask} of our earlier prediction (for replaying the identity rule on a rebuild)."""
        def on(frame: int) -> dict[int, object]:
            out = {}
            for rid, res in entry.reference.items():
                ours = parse_brush_region_id(rid)
                if ours is not None and ours[1] == frame:
                    mask = _decode(res)
                    if mask is not None:
                        out[ours[0]] = mask
            return out
        return on

    def _strip_emitted(self, region: Region, entry: _Entry) -> Region:
        """Drop keyframes of a video region that are our own output echoed back (accepted, not prompts)."""
        if not isinstance(region, VideoRectRegion):
            return region
        emitted = entry.tracker.emitted.get(region.id)
        if emitted is None and region.id in entry.reference:
            emitted = entry.tracker.boxes_of_sequence(entry.reference[region.id])
        if not emitted:
            return region
        prompted = {e.frame for rid, e in entry.tracker.ledger.entries.items() if rid.startswith(region.id + "@")}
        keep = tuple(kf for kf in region.keyframes if kf.frame in prompted or not _near(emitted.get(kf.frame),
                                                                                        kf.box_xyxy))
        return replace(region, keyframes=keep) if keep else region

    def _prediction(self, tracker: TaskTracker) -> dict:
        return {"result": tracker.results(), "model_version": self.model.version}

    def _write(self, job: Job, final: bool) -> None:
        """Create or update this model version's one prediction for the task in LS."""
        if self.client is None:
            raise BackendError("LABEL_STUDIO_URL is not set, so the full result cannot be written into Label Studio")
        with self._lock:
            entry = self._entries.get(job.task_id)
        if entry is None or entry.tracker.version != job.version:
            return  # evicted or superseded: a newer job writes
        pred = self._prediction(entry.tracker)
        pid = self._prediction_ids.get(job.task_id)
        if pid is None:
            mine = [p for p in self.client.list_predictions(job.task_id) if p.get("model_version") == pred["model_version"]]
            pid = max((p["id"] for p in mine), default=None)
        if pid is None:
            pid = self.client.create_prediction(job.task_id, pred["result"], score=None,
                                                model_version=pred["model_version"])["id"]
        else:
            self.client.update_prediction(pid, pred["result"], score=None, model_version=pred["model_version"])
        self._prediction_ids[job.task_id] = pid
        logger.info("task %s: %s prediction %s (%d results)", job.task_id, "final" if final else "partial", pid,
                    len(pred["result"]))

    # ---- trackers ----------------------------------------------------------------------------
    def _entry(self, task: Mapping, shape: TaskShape) -> _Entry:
        """The task's tracker; built (media fetched, prompts from annotations applied) when missing or stale."""
        tid = taskio.task_id_of(task)
        refs = taskio.media_refs(task, shape)
        key = taskio.media_key(refs) + "|" + repr(shape)
        with self._lock:
            entry = self._entries.get(tid)
            if entry is not None and entry.media == key:
                self._entries.move_to_end(tid)
                return entry
            if entry is not None:
                self._drop(tid)
        predictor = self.model.get()
        pins = contextlib.ExitStack()
        try:
            source = taskio.open_media(self.media, tid, shape, refs, pins)
            fps = shape.fps(task.get("data")) if isinstance(shape, VideoShape) else 24.0
            tracker = TaskTracker(tid, shape, predictor.start_session(source), fps=fps)
            predictor.prewarm(tracker.session)  # the frames clicked first get encoded while nothing else runs
        except BaseException:
            pins.close()
            raise
        predictions = task.get("predictions")
        if predictions is None and self.client is not None:
            with contextlib.suppress(BackendError):
                predictions = self.client.list_predictions(tid)
        entry = _Entry(tracker, key, pins, taskio.reference_results(predictions, self.model.version))
        with self._lock:
            self._entries[tid] = entry
            while len(self._entries) > self.settings.max_sessions:
                self._drop(next(iter(self._entries)))
        for rid, res in entry.reference.items():  # our earlier objects keep their numbers
            ours = parse_brush_region_id(rid)
            labels = (res.get("value") or {}).get("brushlabels") or []
            if ours is not None and labels:
                tracker.book.ensure(ours[0], labels[0])
        stored = taskio.prompt_results(task)
        if stored:
            with contextlib.suppress(BadRequest):  # an old bad region must not block new prompts
                self._apply(entry, stored, interactive=False, replay=True)
        return entry

    def _drop(self, tid: int) -> None:
        entry = self._entries.pop(tid, None)
        if entry is None:
            return
        with contextlib.suppress(TimeoutError):
            self.jobs.cancel(tid)
        entry.tracker.session.close()
        entry.pins.close()
        logger.info("task %s: session closed", tid)

    def _task_lock(self, tid: int) -> threading.Lock:
        with self._lock:
            return self._task_locks.setdefault(tid, threading.Lock())

    def shape_of(self, config: str) -> TaskShape:
        with self._lock:
            shape = self._configs.get(config)
        if shape is None:
            shape = parse_label_config(config)
            with self._lock:
                self._configs[config] = shape
        return shape

    def _config_of(self, body: Mapping) -> str:
        config = body.get("label_config")
        if isinstance(config, str) and config.strip():
            return config
        project = str(body.get("project") or "").split(".")[0]
        if project in self._project_configs:
            return self._project_configs[project]
        raise BadRequest("the request has no label_config; send the project's label config")

    def _count_frame(self) -> None:
        self.frames_propagated += 1


_ECHOED = ("keypointlabels", "rectanglelabels")  # prompt regions returned with the masks (see TaskTracker)


def _decode(result: Mapping):
    """HxW bool mask of a stored brush result, or None when it is not one we can read."""
    value = result.get("value") or {}
    try:
        return rle_to_mask(value.get("rle"), result.get("original_height"), result.get("original_width"))
    except (TypeError, ValueError):
        return None


def _rtype(region: Region) -> str:
    return {"KeypointRegion": "keypointlabels", "RectRegion": "rectanglelabels", "BrushRegion": "brushlabels",
            "VideoRectRegion": "videorectangle"}[type(region).__name__]


def _near(a, b, tol_px: float = 0.5) -> bool:
    return a is not None and all(abs(x - y) <= tol_px for x, y in zip(a, b))
