"""The video predictor: sam2's `SAM2VideoPredictor` session lifecycle on OpenVINO, with typed state.

Usage::

    engine = VideoPredictor(EngineSettings(model_dir="models/sam2.1_hiera_tiny_1024_bf16"))
    session = engine.start_session(open_source("clip.mp4"))
    engine.add_points(session, frame=0, obj_id="car-1", box=(x0, y0, x1, y1))
    for result in engine.propagate(session):          # a generator: stop iterating to cancel
        masks = result.masks()                       # {obj_id: bool [H, W]}

Frames are 0-based; coordinates are pixels of the video (x right, y down);
boxes are xyxy. A new prompt on a frame that was already tracked turns it into
a conditioning frame (setting `add_all_frames_to_correct_as_cond`), and
`propagate(start=k)` re-tracks from k on while frames before k keep their
results and memories.

Re-track only what changed: `pending_passes(session)` says which objects must be
re-tracked from where after prompt changes (see `retrack`), and
`propagate(..., objects=[...])` tracks only those objects; every other object
keeps its results and memories bit for bit and its memory attention is not run.
`propagate` without `objects` tracks every object, exactly as sam2 does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .batching import auto_attention_batch, memory_limit_bytes
from .conditioned import ConditionedCache
from .features import FeatureCache
from .frames import FrameSource
from .heads import use_multimask
from .memory import gather_memory, plan_memory
from .model import ModelBundle
from .prewarm import Activity, Prewarmer
from .numerics import NO_OBJ_SCORE, fill_holes, non_overlapping, resize_bilinear
from .retrack import PassPlan, advance, mark_changed, pending_passes
from .runtime import Aborted, Runtime
from .session import FrameResult, PromptError, SessionBusy, VideoSession
from .state import FrameOutput, ObjectId, ObjectTrack, PointPrompt
from .store import HeavyStateStore, SpillFull
from .tracker import Tracker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineSettings:
    """Engine settings (sizes in bytes, times in seconds).

    add_all_frames_to_correct_as_cond: a prompt on a frame that was already tracked makes it a conditioning
    frame (True, the product default: a correction is remembered by every later frame like a first prompt, as
    an annotator expects) or an ordinary tracked frame (False, the SAM 2.1 configs' value: the correction only
    reaches later frames through the last 6 frames' memories). Both are tested against sam2.
    non_overlap_masks: None keeps the export's setting; True keeps only the highest-scoring object per pixel
    in the returned masks (as sam2's predictor with non_overlap_masks=True; memories are unaffected).
    """

    model_dir: str | Path
    precision: str = "auto"                 # auto | f32 | bf16 (OpenVINO inference precision)
    threads: int = 0                        # 0 = all cores
    device: str = "CPU"                     # OpenVINO device(s), see runtime.Runtime
    feature_cache_bytes: int = 1 << 30      # image features kept across sessions (LRU)
    conditioned_cache_bytes: int = 128 << 20  # memory-conditioned features of recent frames (clicks skip attention)
    attention_batch: int | None = None      # objects per memory-attention call (the frame shared; see
                                            # Tracker.condition); None: as many as memory allows (engine.batching)
    max_resident_frames: int = 32           # tracked frames per object whose memories stay in RAM
    spill_dir: str | Path | None = None     # parent of the per-session spill folders (None: the system temp dir)
    max_spill_bytes: int = 8 << 30          # per session; beyond it propagation stops with SpillFull (0: no cap)
    fill_hole_area: int | None = None       # None: the model's own setting (8 for SAM 2.1)
    add_all_frames_to_correct_as_cond: bool = True
    non_overlap_masks: bool | None = None
    ov_cache_dir: str | Path | None = None  # OpenVINO compiled-model cache (faster restarts)
    busy_timeout_s: float = 5.0


class VideoPredictor:
    def __init__(self, settings: EngineSettings, *, runtime: Runtime | None = None):
        self.settings = settings
        bundle = runtime.bundle if runtime else ModelBundle.load(settings.model_dir)
        self.runtime = runtime or Runtime(bundle, precision=settings.precision, threads=settings.threads,
                                          device=settings.device, cache_dir=settings.ov_cache_dir)
        cfg = bundle.config
        overrides = {"add_all_frames_to_correct_as_cond": settings.add_all_frames_to_correct_as_cond}
        if settings.fill_hole_area is not None:
            overrides["fill_hole_area"] = settings.fill_hole_area
        if settings.non_overlap_masks is not None:
            overrides["non_overlap_masks"] = settings.non_overlap_masks
        self.cfg = replace(cfg, **overrides)
        self.bundle = bundle
        if settings.max_resident_frames < cfg.num_maskmem * cfg.memory_temporal_stride_for_eval:
            raise ValueError(f"max_resident_frames must be at least {cfg.num_maskmem * cfg.memory_temporal_stride_for_eval} "
                             f"(the memory window) or tracking would lose memories")
        self.features = FeatureCache(settings.feature_cache_bytes)
        self.conditioned = ConditionedCache(settings.conditioned_cache_bytes)
        batch = settings.attention_batch or auto_attention_batch(bundle.image_size, self.runtime.precision,
                                                                 memory_limit_bytes())
        self.tracker = Tracker(self.runtime, self.features, attention_batch=batch)
        log.info("memory attention: up to %d objects per call (%s)", batch,
                 "ATTENTION_BATCH" if settings.attention_batch else "automatic, from the memory limit")
        self.tracker.cfg = self.cfg
        self.activity = Activity()
        self.prewarmer = Prewarmer(self.tracker, self.activity)

    # ---- sessions --------------------------------------------------------------------------
    def start_session(self, source: FrameSource) -> VideoSession:
        s = self.settings
        return VideoSession(source=source, store=HeavyStateStore(s.max_resident_frames, s.spill_dir, s.max_spill_bytes))

    def close_session(self, session: VideoSession) -> None:
        self.prewarmer.forget(session.source.key)
        self.conditioned.drop_session(session.session_id)
        session.close()

    def prewarm(self, session: VideoSession, frames: Sequence[int] | None = None) -> None:
        """Encode frames the annotator is likely to click next, in the background, only while no propagation
        runs (see `prewarm`). Default: the first frames when nothing is prompted yet, else the frames next to
        the latest prompts that no object has been tracked on."""
        if frames is None:
            n = session.num_frames
            prompted = sorted({f for t in session.objects for f in t.prompted_frames()})
            if not prompted:
                frames = range(min(n, 4))
            else:
                tracked = set().union(*(t.tracked for t in session.objects))
                near = [f + d for f in prompted for d in (1, -1, 2, -2, 3, -3)]
                frames = [f for f in near if 0 <= f < n and f not in tracked]
        self.prewarmer.request(session.source, frames)

    # ---- prompts ---------------------------------------------------------------------------
    def add_points(self, session: VideoSession, frame: int, obj_id: ObjectId, *,
                   points: Sequence[Sequence[float]] | None = None, labels: Sequence[int] | None = None,
                   box: Sequence[float] | None = None, clear_old_points: bool = True) -> FrameResult:
        """Clicks and/or a box for one object on one frame; returns all objects' masks on that frame.

        points: [[x, y], ...] video pixels; labels: 1 positive / 0 negative per point; box: (x0, y0, x1, y1).
        """
        frame = session.check_frame(frame)
        prompt = self._point_prompt(session, points, labels, box, clear_old_points)
        session.acquire(self.settings.busy_timeout_s)
        try:
            feats = self.tracker.features(session.source, frame)
            track, restart = session.prompt_target(obj_id)  # registered only once all went well
            if not clear_old_points and frame in track.points:
                prompt = track.points[frame].extended(prompt)
            is_init, reverse, is_cond = self._prompt_slot(track, frame)
            prev = self._temp(track, is_cond).get(frame) or track.cond.get(frame) or track.non_cond.get(frame)
            prev_logits = None
            if prev is not None and self._ensure(session, track, frame, prev) and prev.pred_logits is not None:
                prev_logits = np.clip(prev.pred_logits, -32.0, 32.0)[None, None]
            pix = (self.tracker.without_memory(feats, 1) if is_init
                   else self._condition(session, feats, [track], frame, reverse))
            s = np.float32(self.bundle.image_size)
            coords = prompt.coords / np.array([session.width, session.height], np.float32) * s
            heads = self.tracker.decode(pix, feats, multimask=use_multimask(self.cfg, is_init, len(prompt)),
                                        point_coords=coords[None], point_labels=prompt.labels[None],
                                        mask_input=prev_logits)
            out = FrameOutput(self._fill(heads.low_res[0]), None, heads.obj_ptr[0], float(heads.object_score[0]))
            track = session.register_prompted(obj_id, restart)
            track.points[frame] = prompt
            track.masks.pop(frame, None)
            self._temp(track, is_cond)[frame] = out
            mark_changed(track, frame, session.num_frames)
            return self._frame_result(session, frame, is_cond)
        finally:
            session.release()

    def add_mask(self, session: VideoSession, frame: int, obj_id: ObjectId, mask: np.ndarray) -> FrameResult:
        """A mask prompt (e.g. an annotator's corrected mask) [H, W] for one object on one frame.

        Any non-zero value is foreground (a 0/255 uint8 mask is fine): like sam2, the mask becomes boolean
        before it is resized to the model's input size.
        """
        frame = session.check_frame(frame)
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise PromptError(f"a mask prompt must be 2-D [height, width], got shape {mask.shape}")
        mask = mask != 0
        session.acquire(self.settings.busy_timeout_s)
        try:
            feats = self.tracker.features(session.source, frame)
            track, restart = session.prompt_target(obj_id)
            _, _, is_cond = self._prompt_slot(track, frame)
            low, ptr, score = self.tracker.mask_as_output(feats, mask)
            out = FrameOutput(self._fill(low), None, ptr, score)
            track = session.register_prompted(obj_id, restart)
            track.masks[frame] = mask
            track.points.pop(frame, None)
            self._temp(track, is_cond)[frame] = out
            mark_changed(track, frame, session.num_frames)
            return self._frame_result(session, frame, is_cond)
        finally:
            session.release()

    def clear_prompts(self, session: VideoSession, frame: int, obj_id: ObjectId) -> FrameResult:
        """Remove one object's prompts on a frame; a conditioning frame becomes an ordinary tracked frame."""
        frame = session.check_frame(frame)
        session.acquire(self.settings.busy_timeout_s)
        try:
            track = self._track(session, obj_id)
            for d in (track.points, track.masks, track.temp_cond, track.temp_non_cond):
                d.pop(frame, None)
            out = track.cond.pop(frame, None)
            if out is not None:
                track.non_cond[frame] = out
                track.tracked.pop(frame, None)
            mark_changed(track, frame, session.num_frames)
            is_cond = any(frame in t.temp_cond for t in session.objects)
            return self._frame_result(session, frame, is_cond)
        finally:
            session.release()

    def remove_object(self, session: VideoSession, obj_id: ObjectId) -> None:
        session.acquire(self.settings.busy_timeout_s)
        try:
            self._track(session, obj_id)
            session.forget_object(obj_id)
        finally:
            session.release()

    # ---- propagation -----------------------------------------------------------------------
    def propagate(self, session: VideoSession, *, start: int | None = None, max_frames: int | None = None,
                  reverse: bool = False, objects: Sequence[ObjectId] | None = None) -> Iterator[FrameResult]:
        """Track objects frame by frame from `start` (default: their first prompted frame).

        Forward to the end (or `max_frames` further), or backward to frame 0 with reverse=True.
        objects: the objects to (re)track (default: all, as sam2 does); the others are returned with the
        results they have, untouched. Each FrameResult holds every object.
        A generator: results stream out and closing it stops the work at the next frame.
        """
        if start is not None:
            session.check_frame(start)
        session.acquire(self.settings.busy_timeout_s)
        try:
            self._preflight(session)
            chosen = list(session.objects) if objects is None else [self._track(session, o) for o in objects]
            if not chosen:
                return
            n = session.num_frames
            if start is None:
                start = min(t for tr in chosen for t in tr.cond)
            span = n if max_frames is None else max_frames
            if reverse:
                order = range(start, max(start - span, 0) - 1, -1) if start > 0 else range(0)
            else:
                order = range(start, min(start + span, n - 1) + 1)
            with self.activity.propagating():
                for frame in order:
                    yield self._track_frame(session, frame, reverse, chosen)
        finally:
            session.release()

    def stop_on(self, event):
        """Context manager: engine calls made on this thread inside it stop within a node of the graph in flight
        once `event` (a threading.Event) is set, raising `Aborted`; the frame in flight is then left untracked and
        the session stays consistent (a later `pending_passes` resumes from it). For a propagation job's cancel."""
        return self.runtime.stop_on(event)

    def pending_passes(self, session: VideoSession) -> list[PassPlan]:
        """The propagations that bring every object up to date after prompt changes, each tracking only the
        objects that changed (see `retrack`). Run them with `propagate(start=, reverse=, objects=)`."""
        return pending_passes(list(session.objects))

    def frame_result(self, session: VideoSession, frame: int) -> FrameResult:
        """Current masks of all objects on a frame (absent objects: logits -1024)."""
        frame = session.check_frame(frame)
        session.acquire(self.settings.busy_timeout_s)
        try:
            return self._frame_result(session, frame, True)
        finally:
            session.release()

    # ---- internals -------------------------------------------------------------------------
    def _point_prompt(self, session, points, labels, box, clear_old) -> PointPrompt:
        if points is None and box is None:
            raise PromptError("give points (with labels) or a box")
        if (points is None) != (labels is None):
            raise PromptError("points and labels must be given together, one label per point")
        prompt = PointPrompt(np.zeros((0, 2)), np.zeros(0)) if points is None else PointPrompt(points, labels)
        if points is not None and not np.isin(prompt.labels, (0, 1)).all():
            raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {sorted(set(prompt.labels.tolist()))}")
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            if not (x1 > x0 and y1 > y0):
                raise PromptError(f"box must be (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got {tuple(box)}")
            if not clear_old:
                raise PromptError("a box must come first: add it with clear_old_points=True")
            prompt = PointPrompt([[x0, y0], [x1, y1]], [2, 3]).extended(prompt)
        if not np.isfinite(prompt.coords).all():
            raise PromptError("point coordinates must be finite numbers")
        return prompt

    def _prompt_slot(self, track: ObjectTrack, frame: int) -> tuple[bool, bool, bool]:
        """(is_init_cond_frame, reverse, is_cond) for a prompt on `frame`, as sam2 decides; except that a prompt for
        an object with no conditioning output yet (its only other prompts cleared, its prompts since then not yet
        propagated) is taken without memory, where sam2 would fail an assertion."""
        is_init = frame not in track.tracked or not track.cond
        reverse = False if is_init else track.tracked[frame]
        return is_init, reverse, is_init or self.cfg.add_all_frames_to_correct_as_cond

    @staticmethod
    def _temp(track: ObjectTrack, is_cond: bool) -> dict[int, FrameOutput]:
        return track.temp_cond if is_cond else track.temp_non_cond

    @staticmethod
    def _track(session: VideoSession, obj_id: ObjectId) -> ObjectTrack:
        try:
            return session.objects.get(obj_id)
        except KeyError as e:
            raise PromptError(e.args[0]) from None

    def _fill(self, logits: np.ndarray) -> np.ndarray:
        return fill_holes(logits, self.cfg.fill_hole_area)

    def _ensure(self, session: VideoSession, track: ObjectTrack, frame: int, out: FrameOutput) -> bool:
        if frame in track.non_cond and track.non_cond[frame] is out:
            return session.store.ensure(track.uid, frame, out)
        return True

    def _memory_plan(self, session: VideoSession, track: ObjectTrack, frame: int, reverse: bool):
        """(memory plan, cache key of its conditioned features): the key names every output the plan reads."""
        if not track.cond:
            raise PromptError(f"object {track.obj_id!r} has no prompted frame left to track from; prompt it again")
        plan = plan_memory(frame, list(track.cond), lambda t: t in track.non_cond, self.cfg, session.num_frames, reverse)

        def serial(t):
            out = track.non_cond.get(t) or track.cond.get(t)
            return None if out is None else out.serial
        key = (session.session_id, track.uid, frame, reverse, tuple((p, t, serial(t)) for p, t in plan.spatial),
               tuple((d, t, serial(t)) for d, t in plan.pointers))
        return plan, key

    def _memory_inputs(self, session: VideoSession, track: ObjectTrack, plan):
        def lookup(t):
            return track.non_cond.get(t) or track.cond.get(t)

        def maskmem_of(_t_pos, t):
            out = lookup(t)
            return out.maskmem if out is not None and self._ensure(session, track, t, out) else None

        return gather_memory(plan, maskmem_of, lambda t: lookup(t).obj_ptr, self.cfg, self.bundle.constants,
                             session.num_frames, self.bundle.memory)

    def _condition(self, session: VideoSession, feats, tracks: list[ObjectTrack], frame: int,
                   reverse: bool) -> np.ndarray:
        """Memory-conditioned features [B,256,h,w] of `tracks` on `frame`, from the cache where nothing they
        depend on changed; memory attention runs (and is counted per object) only for the others."""
        planned = [self._memory_plan(session, t, frame, reverse) for t in tracks]
        rows: list[np.ndarray | None] = [self.conditioned.get(key) for _, key in planned]
        miss = [i for i, r in enumerate(rows) if r is None]
        if miss:
            fresh = self.tracker.condition(feats, [self._memory_inputs(session, tracks[i], planned[i][0]) for i in miss])
            for j, i in enumerate(miss):
                rows[i] = fresh[j:j + 1]
                self.conditioned.put(planned[i][1], rows[i])
                session.attention_calls[tracks[i].obj_id] += 1
        return rows[0] if len(rows) == 1 else np.concatenate(rows)

    def _preflight(self, session: VideoSession) -> None:
        """Encode memories of newly prompted frames and move them into the tracks (sam2's preflight)."""
        if len(session.objects) == 0:
            raise PromptError("no objects yet: add points, a box or a mask first")
        pending: dict[int, list[tuple[ObjectTrack, FrameOutput]]] = {}
        for track in session.objects:
            for temp in (track.temp_non_cond, track.temp_cond):
                for frame, out in temp.items():
                    if out.maskmem is None:
                        pending.setdefault(frame, []).append((track, out))
        for frame, items in pending.items():
            feats = self.tracker.features(session.source, frame)
            low = np.stack([o.pred_logits for _, o in items])
            scores = np.array([o.object_score for _, o in items], np.float32)
            mem = self.tracker.encode_memory(feats, low, scores, from_prompts=True)
            for (_, out), m in zip(items, mem):
                out.maskmem = m
        for track in session.objects:
            for stored, temp in ((track.non_cond, track.temp_non_cond), (track.cond, track.temp_cond)):
                for frame, out in temp.items():
                    stored[frame] = out
                    if stored is track.cond:
                        session.store.forget(track.uid, frame)
                temp.clear()
            if not track.cond:
                raise PromptError(f"object {track.obj_id!r} has no prompts; add points, a box or a mask for it first")
            for frame in track.cond:
                track.non_cond.pop(frame, None)

    def _track_frame(self, session: VideoSession, frame: int, reverse: bool, tracks: list[ObjectTrack]) -> FrameResult:
        todo = [t for t in tracks if frame not in t.cond]
        if todo:
            feats = self.tracker.features(session.source, frame)
            pix = self._condition(session, feats, todo, frame, reverse)
            heads = self.tracker.decode(pix, feats, multimask=use_multimask(self.cfg, False, 0))
            mem = self.tracker.encode_memory(feats, heads.low_res, heads.object_score, from_prompts=False)
            for i, track in enumerate(todo):
                out = FrameOutput(self._fill(heads.low_res[i]), mem[i], heads.obj_ptr[i], float(heads.object_score[i]))
                session.store.forget(track.uid, frame)  # the output it replaces, if spilled
                track.non_cond[frame] = out
                session.store.add(track.uid, frame, out)
        for track in tracks:
            track.tracked[frame] = reverse
            advance(track, frame, reverse, session.num_frames)
        return self._frame_result(session, frame, False)

    def _frame_result(self, session: VideoSession, frame: int, is_cond: bool) -> FrameResult:
        """Each object's latest logits on `frame` resized to the video (sam2's consolidation)."""
        lr = self.bundle.low_res_size
        rows, sources = [], []
        for track in session.objects:
            temp = track.temp_cond if is_cond else track.temp_non_cond
            out = temp.get(frame) or track.cond.get(frame) or track.non_cond.get(frame)
            if out is not None and self._ensure(session, track, frame, out) and out.pred_logits is not None:
                rows.append(out.pred_logits)
                sources.append(out.serial)
            else:
                rows.append(np.full((lr, lr), NO_OBJ_SCORE, np.float32))
                sources.append(None)
        size = (session.height, session.width)
        if not rows:
            return FrameResult(frame, [], np.zeros((0, *size), np.float32))
        if self.cfg.non_overlap_masks:  # every object's row depends on all of them
            return FrameResult(frame, session.objects.ids, non_overlapping(resize_bilinear(np.stack(rows), *size)))
        # resized per object when asked for: a consumer skips the rows it already has (same source)
        return FrameResult(frame, session.objects.ids, low_res=np.stack(rows), size=size, sources=sources)


__all__ = ["VideoPredictor", "EngineSettings", "FrameResult", "PromptError", "SessionBusy", "SpillFull", "PassPlan",
           "Aborted"]
