"""The Label Studio side of the product, without HTTP: /setup, /predict, /webhook and job status as methods.

Flow of an interactive prompt: find (or rebuild from the task's annotations) the task's tracker, fold the context's
regions into its prompt ledger, push the changes into the engine, start a background job that propagates from the
earliest changed frame (cancelling the task's older job), wait up to the time budget, answer with what is tracked
so far; the job goes on and writes the complete result into LS as this model version's prediction for the task
(`backend.ls.writer`).

Locks and sessions: see `backend.serving.tracking.TrackingCore`, the per-task core this class builds on.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from backend.engine import FrameError, PromptError
from backend.ls import taskio
from backend.ls.configs import Configs
from backend.ls.entries import TaskEntry, build_entry
from backend.ls.errors import BackendError, BadRequest
from backend.ls.labelconfig import FramesShape, TaskShape
from backend.ls.lsclient import LabelStudioClient
from backend.ls.identity import is_correction, reference_masks, rtype_of, split_known, strip_emitted
from backend.ls.regions import parse_regions
from backend.ls.tasktrack import TaskTracker
from backend.ls.webhooks import ACTIONS, WebhookGate
from backend.ls.writer import PredictionWriter
from backend.serving import rawjson
from backend.serving.jobs import Job
from backend.serving.limits import LimitExceeded
from backend.serving.locks import TaskBusy
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder
from backend.serving.tracking import TrackingCore
from backend.settings import Settings

logger = logging.getLogger(__name__)
_REPLAY_ERRORS = (BadRequest, PromptError, FrameError)  # a bad saved annotation: skipped, never blocks the task


class TrackingService(TrackingCore):
    """Label Studio's ML-backend protocol (/setup, /predict, /webhook) on the shared per-task tracking core: LS
    regions folded into each task's prompt ledger, sessions built from LS tasks, results written back as predictions."""

    def __init__(self, settings: Settings, model: ModelHolder, media: MediaResolver,
                 client: LabelStudioClient | None):
        self.client = client
        super().__init__(settings, model, media)
        self.configs = Configs()
        self.writer = PredictionWriter(client, retry_s=self.limits.ls_write_retry_s) if client else None
        self.webhooks = WebhookGate(self._webhook_hint, self.limits)
        self.answer_texts = rawjson.TextCache(settings.answer_cache_bytes)  # unchanged results' JSON, across clicks

    # ---- protocol entry points ---------------------------------------------------------------
    def setup(self, body: Mapping) -> dict:
        """Remember the project's label config (webhooks may not carry it); never loads anything heavy."""
        project, schema = str(body.get("project") or "").split(".")[0], body.get("schema")
        if isinstance(schema, str) and schema.strip():
            self.configs.remember(project, schema)  # a config we cannot serve is refused now, where LS shows it
        return {"model_version": self.model.version}

    def predict(self, body: Mapping) -> dict:
        tasks = body.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            raise BadRequest("'tasks' must be a non-empty list of LS tasks")
        shape = self.configs.of_request(body)
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

        Trusted (basic auth or WEBHOOK_SECRET): the payload is used as sent. Untrusted (LS sends webhooks without
        basic auth): the same answer whatever happens; the gate re-reads the task from LS later, rate-limited
        (see `backend.ls.webhooks`).
        """
        if not trusted:
            self.webhooks.submit(body)
            return {"status": "accepted"}
        action = body.get("action")
        if action not in ACTIONS:
            return {"status": "ignored", "action": action}
        task, annotation = body.get("task"), body.get("annotation")
        if not isinstance(task, Mapping) or not isinstance(annotation, Mapping):
            raise BadRequest(f"{action} webhook needs 'task' and 'annotation' objects")
        project = body.get("project") if isinstance(body.get("project"), Mapping) else {}
        config = project.get("label_config")
        shape = self.configs.shape_of(config) if isinstance(config, str) and config.strip() else \
            self.configs.of_project(project.get("id") or task.get("project"))
        if shape is None and self.client is not None and isinstance(task.get("project"), int):
            shape = self.configs.remember(str(task["project"]),
                                          self.client.get_project(task["project"]).get("label_config") or "")
        if shape is None:
            raise BadRequest("the webhook carries no label config and this project never called /setup; "
                             "reconnect the ML backend in the project settings")
        return self._annotation_saved(task, annotation, shape)

    def shutdown(self) -> None:
        self._closing = True
        self.webhooks.stop()
        super().shutdown()

    # ---- webhooks ----------------------------------------------------------------------------
    def _annotation_saved(self, task: Mapping, annotation: Mapping, shape: TaskShape) -> dict:
        results = _usable(annotation.get("result"))
        if not taskio.has_prompt_tools(results, shape):
            return {"status": "no prompts"}
        task = dict(task, annotations=[annotation], drafts=[])
        tid = taskio.task_id_of(task)
        with self.task_locks.hold(tid):
            entry = self._entry(task, shape)
            _, started = self._apply(entry, results, interactive=False)
        return {"status": "propagating" if started else "unchanged", "task": tid}

    def _webhook_hint(self, task_id: int, annotation_id: object) -> None:
        """An unauthenticated webhook named this task: read it (and its annotation) from LS and act on that."""
        if self.client is None:
            logger.warning("unauthenticated webhook for task %s ignored: no LABEL_STUDIO_URL to verify it with (set "
                           "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, or basic auth / WEBHOOK_SECRET)", task_id)
            return
        task = self.client.get_task(task_id)
        annotations = [a for a in task.get("annotations") or [] if isinstance(a, Mapping)]
        annotation = next((a for a in annotations if a.get("id") == annotation_id), None) \
            or taskio.latest_of(annotations)
        if annotation is None or not isinstance(task.get("project"), int):
            return
        shape = self.configs.of_project(task["project"])
        if shape is None:
            shape = self.configs.remember(str(task["project"]),
                                          self.client.get_project(task["project"]).get("label_config") or "")
        try:
            status = self._annotation_saved(task, annotation, shape)
        except TaskBusy:  # someone is prompting the task right now: look again after the interval
            self.webhooks.submit({"action": ACTIONS[1], "task": {"id": task_id}, "annotation": {"id": annotation_id}})
            return
        logger.info("unauthenticated webhook for task %s: %s", task_id, status["status"])

    # ---- modes -------------------------------------------------------------------------------
    def _interactive(self, task: Mapping, shape: TaskShape, context: list, deadline: float) -> dict:
        tid = taskio.task_id_of(task)
        with self.task_locks.hold(tid):
            entry = self._entry(task, shape)
            mine = taskio.draft_region_ids(task)  # LS sends only the prompting user's drafts: their regions
            # a new job is held: it computes nothing until this answer is rendered (released in `finally`), so the
            # answer does not share the CPU with the next frame's memory attention
            job, _ = self._apply(entry, context, interactive=True, also=mine)
            try:  # the answer goes to one annotator: only their annotation's objects (LS keeps the other regions)
                scope = entry.tracker.ledger.scope_for([r.get("id") for r in context if isinstance(r, dict)] + mine,
                                                       entry.tracker.book)
            except BaseException:
                if job is not None:
                    job.release()
                raise
        try:
            wait_s = max(0.0, min(deadline - time.monotonic(), self.settings.interactive_wait_s))
            if job is not None and wait_s > 0:  # the clicked frame is ready now (sync); by default no waiting for more
                job.release()
                job.wait(wait_s)
            self.sessions.touch(tid)
            return self._prediction(entry.tracker, scope, mask_format=self.settings.interactive_mask_format)
        finally:
            if job is not None:
                job.release()

    def _batch_one(self, task: object, shape: TaskShape, deadline: float) -> dict:
        """Never raises: a task we cannot serve gets an empty result and a log line saying why."""
        try:
            tid = taskio.task_id_of(task)
            entry = self.sessions.peek(tid)
            results = _usable(taskio.prompt_results(task))
            if entry is None and not taskio.has_prompt_tools(results, shape):
                return {"result": [], "model_version": self.model.version}
            with self.task_locks.hold(tid):
                existed = tid in self.sessions
                entry = self._entry(task, shape)  # a new entry has applied the task's annotation already
                job = self._apply(entry, results, interactive=False)[0] if results and existed else None
            job = job or self.jobs.get(tid)
            if job is not None:
                job.wait(max(0.0, deadline - time.monotonic()))
            if self.writer is not None and job is not None:  # LS stores this answer as a prediction of ours too
                self.writer.reconcile_later(tid, self._reconcile)
            return self._prediction(entry.tracker)
        except Exception as e:  # batch must never crash LS's loop over tasks
            level = logging.WARNING if isinstance(e, BackendError) else logging.ERROR
            logger.log(level, "batch predict: task %s skipped: %s", getattr(task, "get", lambda k: None)("id"), e,
                       exc_info=not isinstance(e, BackendError))
            return {"result": [], "model_version": self.model.version}

    # ---- prompts -----------------------------------------------------------------------------
    def _apply(self, entry: TaskEntry, raw: list, *, interactive: bool, replay: bool = False,
               also: list[str] = (), groups: list[list[str]] | None = None) -> tuple[Job | None, bool]:
        """Fold LS results into the ledger, then push the changes into the engine (`TrackingCore._push`).

        Returns the job that produces the task's current result (None: nothing to track) and whether it is new.
        If anything fails before the engine took the change, the ledger is put back as it was, so a retry of the
        same request is a change again (never "unchanged" with the prompt lost). If the engine fails half-way, the
        session is dropped and rebuilt from LS on the next request. Each annotation is a scope of its own
        (`ObjectBook`): `also` holds more region ids of the request's annotation (the prompting user's draft), `groups`
        the region ids of each annotation in `raw` (a rebuild replays an annotation and a draft, maybe two users').
        The caller holds the task's lock."""
        tracker = entry.tracker
        known, rest = split_known(raw, tracker)  # our own unchanged masks: not decoded, not prompts, still present
        regions = parse_regions(rest, tracker.shape, num_frames=tracker.num_frames, frame_size=tracker.size,
                                skip_bad=not interactive)  # a saved annotation: one bad region must not block it
        regions = [strip_emitted(r, entry) for r in regions]
        with tracker.lock:
            before = tracker.snapshot()

            def rollback() -> None:
                tracker.restore(before)
            try:
                masks_on = reference_masks(entry) if replay else tracker.masks_on
                changed = []
                for part in _parts(regions, groups):  # one annotation (scope) at a time
                    scope = tracker.ledger.scope_for([r.id for r in part] + list(also), tracker.book)
                    changed += tracker.ledger.upsert(part, tracker.book, masks_on, lambda r: is_correction(r, entry),
                                                     replay=replay, scope=scope)
                    if interactive:  # our unchanged masks (`known`) are present, though not decoded
                        kinds = {(rtype_of(r), r.label) for r in part} | {("brushlabels", k.label) for k in known}
                        for rtype, label in kinds:
                            changed += tracker.ledger.remove_missing([*part, *known], rtype, label,
                                                                     book=tracker.book, scope=scope)
                    self._check_caps(tracker, scope)
            except Exception:  # nothing reached the engine yet: put the ledger back as it was
                rollback()
                raise
            for res in raw:
                if isinstance(res, dict) and res.get("type") in _ECHOED and isinstance(res.get("id"), str) \
                        and res["id"] in tracker.ledger.entries:
                    tracker.prompt_regions[res["id"]] = dict(res, origin="prediction")
        return self._push(entry, changed, rollback, replay=replay, held=interactive)

    def _check_caps(self, tracker: TaskTracker, scope: int | None = None) -> None:
        """MAX_OBJECTS and MAX_POINTS count what one annotation (`scope`) asks for; MAX_TASK_OBJECTS bounds the
        objects of all annotators of the task that the engine holds at once."""
        prompts = tracker.ledger.prompts()
        mine = {k: p for k, p in prompts.items() if tracker.book.in_scope(k[0], scope)}
        self.limits.check_objects(len({obj for obj, _ in mine}), tracker.task_id)
        self.limits.check_points(sum(len(p.points) + (p.box is not None) for p in mine.values()), tracker.task_id)
        self.limits.check_task_objects(len({obj for obj, _ in prompts}), tracker.task_id)

    def _prediction(self, tracker: TaskTracker, scope: int | None = None, *, mask_format: str = "rle") -> dict:
        """What LS gets: brush masks as RLE unless `mask_format` says "png" (interactive answers only: LS stores the
        answers of a batch /predict and our written predictions as they are, and exports read RLE)."""
        return {"result": tracker.results(scope, self.answer_texts, mask_format=mask_format),
                "model_version": self.model.version}

    def _write(self, job: Job, final: bool) -> None:
        """Create or update this model version's one prediction for the task in LS (runs on the job's thread,
        holding no lock of ours; the writer serialises writes per task and retries a final one while LS is down)."""
        if self.writer is None:
            raise BackendError("LABEL_STUDIO_URL is not set, so the full result cannot be written into Label Studio")
        entry = self.sessions.peek(job.task_id)
        if entry is None or entry.closed or entry.tracker.version != job.version:
            return  # evicted or superseded: a newer job writes
        pred = self._prediction(entry.tracker)
        entry.prediction_id = self.writer.write(job.task_id, pred["result"], pred["model_version"],
                                                known_id=entry.prediction_id, final=final, stop=job.cancel_event)
        logger.info("task %s: %s prediction %s (%d results)", job.task_id, "final" if final else "partial",
                    entry.prediction_id, len(pred["result"]))
        self.sessions.touch(job.task_id)  # its masks grew: the store's byte cap is enforced on the new size

    def _reconcile(self, task_id: int) -> None:
        """Leave one prediction of our version in LS: the one our job writes (or the newest), never holding a lock
        of ours while LS answers."""
        entry = self.sessions.peek(task_id)
        keep = entry.prediction_id if entry is not None else None
        pid = self.writer.reconcile(task_id, self.model.version, keep)
        if entry is not None and pid is not None:
            entry.prediction_id = pid

    # ---- sessions ----------------------------------------------------------------------------
    def _entry(self, task: Mapping, shape: TaskShape) -> TaskEntry:
        """The task's session; built (media fetched, prompts from annotations applied) when missing or stale.
        The caller holds the task's lock."""
        tid = taskio.task_id_of(task)
        refs = taskio.media_refs(task, shape)
        if isinstance(shape, FramesShape):
            self.limits.check_frames(len(refs), tid)  # before any download
        key = taskio.media_key(refs) + "|" + repr(shape)
        entry, created = self._session(tid, key, lambda: build_entry(
            task, shape, key, refs, model=self.model, media=self.media, client=self.client, limits=self.limits,
            data_dir=self.settings.data_dir))
        stored = taskio.prompt_results(task) if created else []
        if stored:
            try:  # an old bad region must not block new prompts: skip it (logged), keep the rest
                self._apply(entry, stored, interactive=False, replay=True, groups=taskio.prompt_groups(task))
            except (*_REPLAY_ERRORS, LimitExceeded) as e:
                logger.warning("task %s: the saved annotation could not be replayed (%s); continuing without it",
                               tid, e)
        return entry

    def _job_stopped(self, tid: int) -> None:
        """A job stopped before its final write leaves the task to be rebuilt from its saved annotation later, so
        what was saved still reaches LS."""
        if self.client is not None and not self._closing:
            self.webhooks.submit({"action": ACTIONS[1], "task": {"id": tid}, "annotation": {}})


_ECHOED = ("keypointlabels", "rectanglelabels")  # prompt regions returned with the masks (see TaskTracker)


def _usable(results: object) -> list[dict]:
    """The results that could be regions of a control: objects whose type and from_name are strings."""
    return [r for r in results if isinstance(r, dict) and isinstance(r.get("type"), str)
            and isinstance(r.get("from_name"), str)] if isinstance(results, list) else []


def _parts(regions: list, groups: list[list[str]] | None) -> list[list]:
    """`regions` split by the annotation (or draft) whose ids `groups` lists, in that order; a region goes with the
    first group holding its id (a draft of the same annotation then shares its scope through the ids anyway)."""
    if not groups:
        return [regions]
    parts: list[list] = [[] for _ in range(len(groups) + 1)]
    sets = [set(g) for g in groups]
    for r in regions:
        parts[next((i for i, s in enumerate(sets) if r.id in s), len(groups))].append(r)
    return [p for p in parts if p]
