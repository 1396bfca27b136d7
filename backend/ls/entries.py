"""A task's session as the LS adapter keeps it (tracker, pinned media, our earlier prediction), and how it is built
and closed. The service keeps entries in `backend.serving.sessions.SessionStore` (LRU by count, bytes, idle time);
`backend.serving.tracking.close_when_idle` closes an evicted one once nothing uses it.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from backend.ls import taskio
from backend.ls.errors import BackendError
from backend.ls.labelconfig import TaskShape, VideoShape
from backend.ls.lsclient import LabelStudioClient
from backend.ls.prompts import parse_brush_region_id
from backend.ls.tasktrack import TaskTracker
from backend.serving.limits import Limits
from backend.serving.media import MediaResolver
from backend.serving.model import ModelHolder

logger = logging.getLogger(__name__)


@dataclass
class TaskEntry:
    tracker: TaskTracker
    media: str  # key of the media + label config the tracker was built for (a change means a rebuild)
    pins: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    reference: dict[str, dict] = field(default_factory=dict)  # our earlier prediction's results by region id
    prediction_id: int | None = None  # our prediction in LS, once written (or adopted) by this session
    closed: bool = False

    def nbytes(self) -> int:
        rles = [(r.get("value") or {}).get("rle") for r in self.reference.values()]
        ref = sum((len(x) if x is not None else 0) + 1000 for x in rles)
        return self.tracker.nbytes() + ref

    def close_now(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.tracker.session.close()
        finally:
            self.pins.close()
        logger.info("task %s: session closed", self.tracker.task_id)


def build_entry(task: Mapping, shape: TaskShape, key: str, refs: list[str], *, model: ModelHolder,
                media: MediaResolver, client: LabelStudioClient | None, limits: Limits, data_dir: object) -> TaskEntry:
    """Fetch the task's media, open an engine session on it (caps checked) and read our earlier prediction."""
    tid = taskio.task_id_of(task)
    predictor = model.get()
    pins = contextlib.ExitStack()
    try:
        source = taskio.open_media(media, tid, shape, refs, pins)
        pins.callback(getattr(source, "close", lambda: None))
        limits.check_frames(source.num_frames, tid)
        limits.check_frame_size(source.width, source.height, tid)
        try:
            session = predictor.start_session(source)
        except OSError as e:
            raise BackendError(f"cannot open a tracking session: the spill folder under DATA_DIR={data_dir} is not "
                               f"writable ({e.strerror or type(e).__name__}); give the backend a writable DATA_DIR",
                               status=503) from None
        fps = shape.fps(task.get("data")) if isinstance(shape, VideoShape) else 24.0
        tracker = TaskTracker(tid, shape, session, fps=fps)
        predictor.prewarm(tracker.session)  # the frames clicked first get encoded while nothing else runs
    except BaseException:
        pins.close()
        raise
    predictions = task.get("predictions")
    if predictions is None and client is not None:
        with contextlib.suppress(BackendError):
            predictions = client.list_predictions(tid)
    entry = TaskEntry(tracker, key, pins, _compact(taskio.reference_results(predictions, model.version)))
    for rid, res in entry.reference.items():  # our earlier objects keep their numbers
        ours = parse_brush_region_id(rid)
        labels = (res.get("value") or {}).get("brushlabels") or []
        if ours is not None and labels and isinstance(labels[0], str):
            tracker.book.ensure(ours[0], labels[0])
    return entry


Closer = Callable[[int, TaskEntry], None]


def _compact(reference: dict[str, dict]) -> dict[str, dict]:
    """Our earlier prediction's results with each brush RLE as a uint8 array (1 byte per RLE byte, not 8); results
    whose RLE is not a list of bytes are dropped (they could never be decoded)."""
    out = {}
    for rid, res in reference.items():
        value = res.get("value")
        rle = value.get("rle") if isinstance(value, dict) else None
        if rle is None:
            out[rid] = res
            continue
        try:
            arr = np.asarray(rle)
            if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer) or \
                    (arr.size and (arr.min() < 0 or arr.max() > 255)):
                raise ValueError
        except (ValueError, TypeError, OverflowError):
            continue
        out[rid] = dict(res, value=dict(value, rle=arr.astype(np.uint8)))
    return out
