"""One Label Studio task being tracked: its engine session, prompt ledger, objects and per-frame results.

The tracker owns no threads. `sync` pushes the ledger's prompts into the engine and says where propagation must
restart; `passes` plans it; `record` keeps each propagated frame's masks (bit-packed at video resolution, then
zlib-compressed: a real object mask at 1080p is ~259 KB packed and ~2-8 KB compressed); `results` renders LS
results; `nbytes` accounts what the tracker holds, so the session store's byte cap (SESSION_MAX_MB) means something. Everything is rebuildable from the task's annotations (see `service`).
"""
from __future__ import annotations

import hashlib
import logging
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from backend.engine import FrameResult, VideoPredictor, VideoSession
from backend.engine.retrack import pending_passes
from backend.ls import geometry as geo
from backend.ls.geometry import Box
from backend.ls.labelconfig import FramesShape, TaskShape, VideoShape
from backend.ls.prompts import FramePrompt, Ledger, ObjectBook, brush_region_id, changed_frames
from backend.ls.results import box_sequence, brush_result, mask_to_box, videorectangle_result, with_data_url
from backend.serving import rawjson
from backend.serving.jobs import Pass

logger = logging.getLogger(__name__)


def mask_digest(packed_bits: np.ndarray) -> bytes:
    """Identity of a bit-packed mask (np.packbits of the HxW mask, row-major)."""
    return hashlib.blake2b(packed_bits.tobytes(), digest_size=16).digest()


def result_digest(res: Mapping) -> bytes | None:
    """Identity of a brush result as LS sends it back: everything `parse_regions` reads from it (id, type, controls,
    item_index, size, format, labels; types included, so 3.0 is not 3) and its RLE bytes, without decoding the RLE.
    None when it cannot be one of ours (no RLE list of byte values)."""
    value = res.get("value")
    rle = value.get("rle") if isinstance(value, Mapping) else None
    if not isinstance(rle, (list, bytes)):
        return None
    try:
        raw = bytes(rle)
    except (TypeError, ValueError):
        return None
    fields = (res.get("id"), res.get("type"), res.get("from_name"), res.get("to_name"), res.get("item_index"),
              res.get("original_width"), res.get("original_height"), value.get("format"), value.get("brushlabels"))
    return hashlib.blake2b(repr(fields).encode() + b"\0" + raw, digest_size=16).digest()


@dataclass
class Rendered:
    """One object's mask on one frame as LS results: `rle` (RLE kept as bytes: a list of Python ints costs 8 bytes
    per RLE byte) with its `result_digest`, and the same result with a PNG data URL once an answer asked for it."""

    rle: dict
    digest: bytes
    png: dict | None = None

    @property
    def png_digest(self) -> bytes:
        return hashlib.blake2b(self.digest, digest_size=16, person=b"maskDataURL").digest()

    def nbytes(self) -> int:
        return len(self.rle["value"]["rle"]) + 1000 + (len(self.png["value"]["maskDataURL"]) + 1000 if self.png else 0)


@dataclass
class TaskTracker:
    task_id: int
    shape: TaskShape
    session: VideoSession
    fps: float = 24.0
    book: ObjectBook = field(default_factory=ObjectBook)
    ledger: Ledger = field(default_factory=Ledger)
    applied: dict[tuple[int, int], FramePrompt] = field(default_factory=dict)
    packed: dict[tuple[int, int], bytes] = field(default_factory=dict)  # zlib(np.packbits(mask)) per object-frame
    version: int = 0  # bumped whenever prompts change: a result written for an older version is stale
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    emitted: dict[str, dict[int, Box]] = field(default_factory=dict)  # video region -> keyframe boxes we sent
    # the annotator's keypoint/rectangle prompts as LS sent them: echoed in every result, because LS drops a smart
    # prompt once its suggestion is accepted, and the saved annotation must keep it to rebuild the session
    prompt_regions: dict[str, dict] = field(default_factory=dict)
    # every mask we produced per (object, frame), also superseded ones: an annotation saved before a re-propagation
    # still holds them, and they are accepted output, not corrections
    emitted_digests: dict[tuple[int, int], set[bytes]] = field(default_factory=dict)
    # `result_digest` of every brush result we sent per (object, frame): LS echoes them back in contexts, and one
    # that matches is our own accepted output (its mask is in `emitted_digests`), recognised without decoding it
    emitted_results: dict[tuple[int, int], set[bytes]] = field(default_factory=dict)
    # per (object, frame): the LS results of its current mask, dropped when the mask changes (their JSON texts live
    # in the service's TextCache under their digests, ANSWER_CACHE_MB)
    _rendered: dict[tuple[int, int], Rendered] = field(default_factory=dict, repr=False)
    # per (object, frame): the (output serial, prompt mask) its packed mask was recorded from (`record`)
    _sources: dict[tuple[int, int], tuple | None] = field(default_factory=dict, repr=False)

    @property
    def num_frames(self) -> int:
        return self.session.num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels of the task's frames."""
        return self.session.width, self.session.height

    # ---- masks ---------------------------------------------------------------------------------
    def mask(self, obj: int, frame: int) -> np.ndarray | None:
        blob = self.packed.get((obj, frame))
        if blob is None:
            return None
        w, h = self.size
        bits = np.frombuffer(zlib.decompress(blob), dtype=np.uint8)
        return np.unpackbits(bits, count=w * h).reshape(h, w).astype(bool)

    def nbytes(self) -> int:
        """Bytes this tracker holds in Python (compressed masks, rendered LS results, prompt masks); the engine
        session's own memory is bounded by the engine's caps."""
        with self.lock:
            total = sum(len(b) + 200 for b in self.packed.values())  # + its key and recorded source
            total += sum(r.nbytes() for r in self._rendered.values())
            total += sum(40 * len(d) + 100 for d in self.emitted_digests.values())
            total += sum(40 * len(d) + 100 for d in self.emitted_results.values())
            masks = {id(p.mask): p.mask.nbytes for p in list(self.applied.values()) + list(self.ledger.prompts().values())
                     if p.mask is not None}
            return total + sum(masks.values())

    def masks_on(self, frame: int) -> dict[int, np.ndarray]:
        """{object: HxW bool mask} tracked on `frame` (objects absent there have empty masks)."""
        out = {}
        for obj in list(self.book.labels):
            m = self.mask(obj, frame)
            if m is not None:
                out[obj] = m
        return out

    def tracked_frames(self, obj: int) -> set[int]:
        return {f for (o, f) in self.packed if o == obj}

    def record(self, result: FrameResult) -> None:
        """Keep one propagated frame's masks (logits > 0) for every object in it. An object whose mask here comes
        from the output (`result.sources`) and prompt mask it was last recorded from is skipped unresized: the other
        objects on a clicked frame, the objects a re-propagation leaves alone."""
        with self.lock:
            for i, obj in enumerate(result.object_ids):
                if obj not in self.book.labels:
                    continue
                key = (obj, result.frame)
                prompt = self.applied.get(key)
                own = prompt.mask if prompt is not None and prompt.mask is not None else None
                source = None if result.sources is None or result.sources[i] is None else \
                    (result.sources[i], None if own is None else id(own))
                if source is not None and key in self.packed and self._sources.get(key) == source:
                    continue
                mask = own if own is not None else result.row(i) > 0  # the annotator's own mask, not its round trip
                bits = np.packbits(mask.ravel())
                blob = zlib.compress(bits.tobytes(), 1)
                self._sources[key] = source
                if self.packed.get(key) == blob:
                    continue  # unchanged: keep its rendered results
                self.packed[key] = blob
                self.emitted_digests.setdefault(key, set()).add(mask_digest(bits))
                self._rendered.pop(key, None)

    # ---- prompts -> engine ---------------------------------------------------------------------
    def sync(self, predictor: VideoPredictor, upto: int | None = None) -> int | None:
        """Apply the ledger to the engine; returns the earliest frame whose prompts changed (None: nothing did).

        `upto`: apply mask prompts (corrections) only on frames <= upto (-1: none), for replaying a saved annotation
        in the order it was made. Objects left without prompts are removed with their results. The caller must hold
        no propagation open.
        """
        with self.lock:
            full = self.ledger.prompts()
            new = full if upto is None else {k: p for k, p in full.items() if p.mask is None or k[1] <= upto}
            changes = changed_frames(self.applied, new)
            if not changes:
                return None
            alive = {obj for obj, _ in new}
            for obj in [o for o in self.book.labels if o not in alive]:
                if any(o == obj for o, _ in self.applied):
                    predictor.remove_object(self.session, obj)
                    self.packed = {k: v for k, v in self.packed.items() if k[0] != obj}
                    self._rendered = {k: v for k, v in self._rendered.items() if k[0] != obj}
                    self._sources = {k: v for k, v in self._sources.items() if k[0] != obj}
                if obj not in {o for o, _ in full}:
                    self.book.forget(obj)
            # an object none of whose prompted frames is left starts over in the engine (a new prompt is not
            # conditioned on memories of a deleted one): none of its masks is kept
            restarted = {obj for obj in alive if (old := {f for o, f in self.applied if o == obj})
                         and not old & {f for o, f in new if o == obj}}
            self.packed = {k: v for k, v in self.packed.items() if k[0] not in restarted}
            self._rendered = {k: v for k, v in self._rendered.items() if k[0] not in restarted}
            self._sources = {k: v for k, v in self._sources.items() if k[0] not in restarted}
            self.applied = new  # before the engine calls: `record` keeps mask prompts verbatim
            # deleted prompts first, so that what is added is never conditioned on them
            for obj, frame in sorted(changes, key=lambda k: k in new):
                if obj not in alive:
                    continue
                prompt = new.get((obj, frame))
                if prompt is None:
                    out = predictor.clear_prompts(self.session, frame, obj)
                    if obj in restarted:
                        continue  # its old mask there is void: the object starts over with its next prompt
                elif prompt.mask is not None:
                    out = predictor.add_mask(self.session, frame, obj, prompt.mask)
                else:
                    pts = [[x, y] for x, y, _ in prompt.points] or None
                    labels = [lab for _, _, lab in prompt.points] or None
                    out = predictor.add_points(self.session, frame, obj, points=pts, labels=labels, box=prompt.box)
                self.record(out)  # the prompted frame's answer is there before any propagation
            self.version += 1
            return changes[0][1]

    def passes(self, start: int | None = None) -> list[Pass]:
        """What the engine says is left to track after the prompt changes (see `backend.engine.retrack`): only the
        objects that changed, forward from a correction, both ways from a new object's first prompt, so frames
        before a correction and every other object keep their masks. `start` is kept for callers; unused."""
        with self.lock:
            return [Pass(p.start, p.reverse, p.objects) for p in pending_passes(list(self.session.objects))]

    def frames_in(self, plan: list[Pass]) -> int:
        """How many frame steps `plan` runs (for progress reports)."""
        return sum(p.start + 1 if p.reverse else self.num_frames - p.start for p in plan)

    def boxes_of_sequence(self, result: dict) -> dict[int, Box]:
        """0-based frame -> pixel xyxy box of each keyframe in a videorectangle result (ours, echoed back by LS)."""
        w, h = self.size
        out = {}
        for kf in (result.get("value") or {}).get("sequence") or []:
            try:
                out[geo.ls_frame_to_index(kf["frame"])] = geo.rect_percent_to_xyxy(
                    kf["x"], kf["y"], kf["width"], kf["height"], w, h, kf.get("rotation", 0))
            except (KeyError, TypeError, ValueError):
                continue
        return out

    # ---- engine output -> LS results -----------------------------------------------------------
    def results(self, scope: int | None = None, texts: rawjson.TextCache | None = None, *,
                mask_format: str = "rle") -> list[dict]:
        """LS results for everything tracked so far: brush masks per object and frame, or one videorectangle per
        object (frames tasks / video tasks). `scope`: only one annotation's objects and prompts (an interactive
        answer goes to one annotator); None: every object (the task's prediction). `texts`: where brush results
        keep their JSON text between calls; with it they come as `rawjson.Fragment`s (the same dicts, plus the
        text `/predict` splices in). `mask_format`: "rle" (value.rle) or "png" (value.maskDataURL, see
        `results.with_data_url`)."""
        with self.lock:
            if isinstance(self.shape, FramesShape):
                return self._brush_results(self.shape, scope, texts, mask_format)
            return self._video_results(self.shape, scope)

    def snapshot(self) -> tuple:
        """What a request may change before the engine takes it (ledger, objects, echoed prompts), to roll back."""
        with self.lock:
            return dict(self.ledger.entries), self.book.snapshot(), dict(self.prompt_regions)

    def restore(self, snap: tuple) -> None:
        with self.lock:
            entries, book, prompts = snap
            self.ledger.entries, self.prompt_regions = dict(entries), dict(prompts)
            self.book.restore(book)

    def _brush_results(self, shape: FramesShape, scope: int | None = None,
                       texts: rawjson.TextCache | None = None, mask_format: str = "rle") -> list[dict]:
        w, h = self.size
        out = [r for rid, r in self.prompt_regions.items()
               if rid in self.ledger.entries and self.book.in_scope(self.ledger.entries[rid].obj, scope)]
        for obj, frame in sorted(self.packed, key=lambda k: (k[1], k[0])):
            if not self.book.in_scope(obj, scope):
                continue
            cached = self._rendered.get((obj, frame))
            mask = None
            if cached is None:
                mask = self.mask(obj, frame)
                if not mask.any():
                    continue
                res = brush_result(brush_region_id(obj, frame), shape.brush_name, shape.image_name, frame, mask,
                                   self.book.labels[obj], width=w, height=h, meta_text=self.book.display(obj))
                digest = result_digest(res)  # covers every field the text depends on (the rest are constants)
                self.emitted_results.setdefault((obj, frame), set()).add(digest)
                cached = Rendered(dict(res, value=dict(res["value"], rle=bytes(res["value"]["rle"]))), digest)
                self._rendered[(obj, frame)] = cached
            if mask_format == "png":
                if cached.png is None:
                    mask = self.mask(obj, frame) if mask is None else mask
                    cached.png = with_data_url(cached.rle, mask)
                res, digest = dict(cached.png, value=dict(cached.png["value"])), cached.png_digest
            else:
                res = dict(cached.rle, value=dict(cached.rle["value"], rle=list(cached.rle["value"]["rle"])))
                digest = cached.digest
            if texts is None:
                out.append(res)
                continue
            text = texts.get(digest)
            if text is None:
                text = rawjson.text_of(res)
                texts.put(digest, text)
            out.append(rawjson.Fragment(res, text))
        return out

    def _video_results(self, shape: VideoShape, scope: int | None = None) -> list[dict]:
        w, h = self.size
        region_of = {obj: key for key, obj in self.book.by_key.items()}
        out = []
        for obj in sorted(self.book.labels):
            if not self.book.in_scope(obj, scope):
                continue
            boxes = {}
            for frame in sorted(self.tracked_frames(obj)):
                prompt = self.applied.get((obj, frame))
                boxes[frame] = prompt.box if prompt is not None and prompt.box is not None \
                    else mask_to_box(self.mask(obj, frame))
            seq = box_sequence(boxes, width=w, height=h, fps=self.fps)
            if not seq or obj not in region_of:
                continue
            self.emitted[region_of[obj]] = self.boxes_of_sequence({"value": {"sequence": seq}})
            out.append(videorectangle_result(region_of[obj], shape.rect_name, shape.video_name, self.book.labels[obj],
                                             seq, frames_count=self.num_frames, duration=self.num_frames / self.fps,
                                             meta_text=self.book.display(obj)))
        return out
