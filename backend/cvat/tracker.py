"""The CVAT tracker function: CVAT's start/continue calls on the shared SAM 2 engine.

One call = one frame. Shapes that start tracking in a call become the objects of a new engine session whose frames
come from a `StreamingFrameSource`; a continue call appends its frame to the session each state points at and tracks
that frame. Sessions live in a `SessionStore` (count, bytes, idle time). When a state's session is gone (restart,
eviction, or the state is behind its session), the object is re-initialised from the state's last box on the
current frame, logged, and answered like any other: a call never returns null.

The image encoder runs once per call: every session of the call takes the frame's features from the engine's
feature cache, filled by the first; a call whose image is byte-identical to a recent one's (the UI sends a frame
again to start a new object there) reuses that call's features.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from backend.cvat.protocol import NewShape, TrackState, parse_call
from backend.cvat.shapes import (clip_box, decode_image, mask_box, parse_rectangle, polygon_to_mask, rle_to_mask,
                                 shape_for)
from backend.cvat.stream import StreamingFrameSource
from backend.engine import FrameError, PromptError, SessionBusy, VideoPredictor, VideoSession
from backend.serving.errors import BackendError, BadRequest
from backend.serving.sessions import SessionStore
from backend.settings import CvatSettings

logger = logging.getLogger(__name__)


class TrackerBusy(BackendError):
    """Another call is still tracking the same session: 409, retry."""

    status = 409


@dataclass
class TrackSession:
    """One engine session fed by CVAT calls: objects started together, the frames they were tracked on."""

    sid: str
    video: VideoSession
    source: StreamingFrameSource
    head: int = 0                       # the last stream frame tracked
    next_obj: int = 0
    closed: bool = False                # evicted or expired while a call waited for it
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def nbytes(self) -> int:
        total = self.source.nbytes
        for track in self.video.objects:
            for out in list(track.cond.values()) + list(track.non_cond.values()):
                total += out.heavy_nbytes + out.obj_ptr.nbytes
        return total


@dataclass
class _Target:
    """One object of a call: where its answer goes, its engine id, the shape type asked for, its last box
    (the answer when the object is not found), and for a new object its prompt (a box, or a bool mask)."""

    index: int
    obj: int
    kind: str
    box: tuple[float, ...]
    prompt: tuple[float, ...] | np.ndarray | None = None


@dataclass
class _Job:
    """What one call asks of one session."""

    session: TrackSession
    targets: list[_Target]
    new: bool


class CvatTracker:
    def __init__(self, settings: CvatSettings, predictor_getter, *, clock=time.monotonic):
        """predictor_getter(timeout_s) -> VideoPredictor (e.g. `ModelHolder.get`): the engine shared with other
        front doors. clock: monotonic seconds for the session TTL (tests pass a fake)."""
        self.settings = settings
        self._predictor = predictor_getter
        self.sessions: SessionStore[str, TrackSession] = SessionStore(
            max_items=settings.max_sessions, max_bytes=settings.sessions_max_bytes, ttl_s=settings.session_ttl_s,
            size_of=lambda s: s.nbytes, close=self._close, clock=clock)
        self.reinitialised = 0  # objects re-initialised from a state whose session was gone
        # digest of a recent call's image -> (source key, frame) whose features the engine cached: the UI sends
        # the same frame twice in a row (a track call, then an init call for an object the annotator just drew)
        self._recent: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._recent_lock = threading.Lock()

    # ---- the call ----------------------------------------------------------------------------------------------
    def track(self, body: object) -> dict:
        """A CVAT tracker call (parsed JSON) -> {"shapes": [...], "states": [...]}."""
        call = parse_call(body, max_shapes=self.settings.max_shapes)
        rgb = decode_image(call.image, max_pixels=self.settings.max_image_pixels)
        height, width = rgb.shape[:2]
        predictor = self._predictor(self.settings.model_wait_s)
        self.sessions.sweep()
        jobs: list[_Job] = []
        done = 0
        answers: list[tuple[dict, TrackState] | None] = [None] * len(call.items)
        try:
            jobs = self._plan(call.items, width, height, predictor)
            digest = hashlib.blake2b(call.image.encode(), digest_size=16).digest()
            shared = self._recent_features(predictor, digest)
            for job in jobs:
                shared = self._run(predictor, job, rgb, shared, answers, (width, height))
                self._remember(digest, job.session.source.key, job.session.head)
                done += 1
        except (PromptError, FrameError) as e:
            raise BadRequest(str(e)) from None
        except SessionBusy as e:
            raise TrackerBusy(str(e)) from None
        finally:
            for job in jobs[done:]:  # new sessions this call failed to hand out
                if job.new:
                    job.session.video.close()
        assert all(a is not None for a in answers)
        return {"shapes": [a[0] for a in answers], "states": [a[1].to_json() for a in answers]}

    def _recent_features(self, predictor: VideoPredictor, digest: bytes):
        with self._recent_lock:
            key = self._recent.get(digest)
        return predictor.features.get(key) if key is not None else None

    def _remember(self, digest: bytes, source_key: str, frame: int) -> None:
        with self._recent_lock:
            self._recent[digest] = (source_key, frame)
            self._recent.move_to_end(digest)
            while len(self._recent) > 8:
                self._recent.popitem(last=False)

    # ---- planning -----------------------------------------------------------------------------------------------
    def _plan(self, items, width: int, height: int, predictor: VideoPredictor) -> list[_Job]:
        """Group the call's objects by session; collect new and lost objects into one new session."""
        by_session: dict[str, list[tuple[int, TrackState]]] = {}
        starts: list[tuple[int, str, object]] = []  # (answer index, kind, prompt: box tuple or bool mask)
        for i, item in enumerate(items):
            if isinstance(item, NewShape):
                starts.append((i, item.kind, self._prompt(item, width, height)))
            else:
                by_session.setdefault(item.session, []).append((i, item))
        jobs = []
        for sid, entries in by_session.items():
            session = self.sessions.get(sid)
            live = []
            for i, state in entries:
                reason = self._lost_reason(session, state, width, height)
                if reason is None:
                    live.append(_Target(i, state.obj, state.kind, state.box))
                    continue
                logger.warning("cvat: object %d of session %s %s: re-initialising it from its last box %s on "
                               "this frame", state.obj, sid, reason, [round(v, 1) for v in state.box])
                self.reinitialised += 1
                try:
                    box = clip_box(state.box, width, height, "the state's last box")
                except BadRequest:
                    box = (0.0, 0.0, float(width), float(height))
                starts.append((i, state.kind, box))
            if live:
                jobs.append(_Job(session, live, new=False))
        if starts:
            jobs.append(self._start(starts, width, height, predictor))
        return jobs

    @staticmethod
    def _lost_reason(session: TrackSession | None, state: TrackState, width: int, height: int) -> str | None:
        if session is None:
            return "is gone (service restart, idle timeout or eviction)"
        if (session.source.width, session.source.height) != (width, height):
            return (f"was tracked on {session.source.width}x{session.source.height} frames but this one is "
                    f"{width}x{height}")
        if state.obj not in session.video.objects:
            return "is no longer in its session"
        if state.frame != session.head:
            return f"is at stream frame {state.frame} but its session moved on to {session.head} (a stale state)"
        return None

    @staticmethod
    def _prompt(shape: NewShape, width: int, height: int):
        if shape.kind == "rectangle":
            return parse_rectangle(shape.points, width, height)
        if shape.kind == "polygon":
            return polygon_to_mask(shape.points, width, height)
        return rle_to_mask(shape.points, width, height)

    def _start(self, starts, width: int, height: int, predictor: VideoPredictor) -> _Job:
        source = StreamingFrameSource(width, height, keep=self.settings.stream_keep_frames)
        session = TrackSession(uuid.uuid4().hex[:16], predictor.start_session(source), source)
        targets = []
        for i, kind, prompt in starts:
            box = prompt if isinstance(prompt, tuple) else mask_box(prompt)
            targets.append(_Target(i, session.next_obj, kind, box, prompt))
            session.next_obj += 1
        return _Job(session, targets, new=True)

    # ---- running ------------------------------------------------------------------------------------------------
    def _run(self, predictor: VideoPredictor, job: _Job, rgb: np.ndarray, shared, answers, size) -> object:
        """Track one session on this call's frame; returns the frame's features for the next session to reuse."""
        session = job.session
        if not session.lock.acquire(timeout=self.settings.busy_timeout_s):
            raise TrackerBusy(f"tracking session {session.sid} is busy with another call; retry in a moment")
        if session.closed:  # closed (eviction, TTL) while this call waited: start its objects afresh
            session.lock.release()
            logger.warning("cvat: session %s closed while a call waited for it: re-initialising %d object(s) from "
                           "their last boxes on this frame", session.sid, len(job.targets))
            self.reinitialised += len(job.targets)
            fresh = self._start([(t.index, t.kind, t.box) for t in job.targets], *size, predictor)
            return self._run(predictor, fresh, rgb, shared, answers, size)
        try:
            frame = session.source.append(rgb)
            key = (session.source.key, frame)
            if shared is not None:
                predictor.features.put(key, shared)
            if job.new:
                for t in job.targets:
                    if isinstance(t.prompt, tuple):
                        predictor.add_points(session.video, frame, t.obj, box=t.prompt)
                    else:
                        predictor.add_mask(session.video, frame, t.obj, t.prompt)
            else:
                wanted = {t.obj for t in job.targets}
                for obj in [o for o in session.video.objects.ids if o not in wanted]:
                    predictor.remove_object(session.video, obj)  # CVAT stopped tracking it: stop paying for it
            result = next(iter(predictor.propagate(session.video, start=frame, max_frames=0)))
            session.head = frame
            self._trim(predictor, session.video, frame)
            shared = predictor.features.get(key) if shared is None else shared
        except BaseException:
            if job.new:
                session.video.close()
            raise
        finally:
            session.lock.release()
        if job.new:
            self.sessions.put(session.sid, session)
        else:
            self.sessions.touch(session.sid)
        masks = result.masks()
        for t in job.targets:
            shape, box, found = shape_for(t.kind, masks[t.obj], t.box)
            if not found:
                logger.info("cvat: object %d of session %s is not visible on stream frame %d; keeping its last box",
                            t.obj, session.sid, frame)
            answers[t.index] = (shape, TrackState(session.sid, t.obj, frame, box, t.kind))
        return shared

    @staticmethod
    def _trim(predictor: VideoPredictor, video: VideoSession, frame: int) -> None:
        """Forget tracked frames no later frame can attend to, so a long track keeps flat memory.

        SAM 2 attends to the prompted frame, the last ``num_maskmem - 1`` frames (times the temporal stride) and the
        object pointers of the last ``max_obj_ptrs_in_encoder - 1`` frames; older outputs are never read again.
        """
        cfg = predictor.cfg
        window = max(cfg.max_obj_ptrs_in_encoder, cfg.num_maskmem * cfg.memory_temporal_stride_for_eval)
        oldest = frame - window
        for track in video.objects:
            for t in [t for t in track.non_cond if t < oldest]:
                del track.non_cond[t]
                track.tracked.pop(t, None)
                video.store.forget(track.uid, t)

    def _close(self, sid: str, session: TrackSession) -> None:
        with session.lock:  # wait for a call still using it
            session.closed = True
            session.video.close()
            try:
                predictor = self._predictor(0)
            except BackendError:
                return
            predictor.features.drop_source(session.source.key)
        logger.info("cvat: tracking session %s closed", sid)

    def close(self) -> None:
        self.sessions.close_all()

