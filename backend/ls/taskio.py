"""Read what a Label Studio task holds: its media references, its prompt regions and our earlier prediction.

Pure functions over LS task dicts (as LS sends them to /predict and in webhooks, or as GET /api/tasks/<id> returns
them), plus `open_media`, which turns a task's media into an engine frame source through the media resolver.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Mapping

from backend.engine import FrameError, ImageSequenceSource, VideoFileSource
from backend.engine.frames import FrameSource
from backend.ls.errors import BadRequest, MediaError
from backend.ls.labelconfig import FramesShape, TaskShape
from backend.serving.media import MediaResolver

logger = logging.getLogger(__name__)


def task_id_of(task: object) -> int:
    if not isinstance(task, Mapping):
        raise BadRequest(f"a task must be an object with 'id' and 'data', got {type(task).__name__}")
    tid = task.get("id")
    if isinstance(tid, bool) or not isinstance(tid, int):
        raise BadRequest(f"task id {tid!r} is not an integer; send LS task objects")
    return tid


def media_refs(task: Mapping, shape: TaskShape) -> list[str]:
    """The task's frame URLs (frames task: the `valueList` list) or its one video URL, as LS stores them."""
    data = task.get("data")
    if not isinstance(data, Mapping) or shape.data_key not in data:
        raise BadRequest(f"task {task.get('id')} has no data['{shape.data_key}'], which the label config reads; "
                         "import tasks with that key")
    value = data[shape.data_key]
    if isinstance(shape, FramesShape):
        if not isinstance(value, list) or not value or not all(isinstance(u, str) and u for u in value):
            raise BadRequest(f"task {task.get('id')} data['{shape.data_key}'] must be a non-empty list of frame URLs "
                             f"(got {type(value).__name__}); see `python -m backend.ls.make_tasks`")
        return list(value)
    if not isinstance(value, str) or not value:
        raise BadRequest(f"task {task.get('id')} data['{shape.data_key}'] must be the video URL, got {value!r}")
    return [value]


def media_key(refs: list[str]) -> str:
    return hashlib.sha256(json.dumps(refs).encode()).hexdigest()[:16]


def open_media(resolver: MediaResolver, task_id: int, shape: TaskShape, refs: list[str],
               stack: contextlib.ExitStack) -> FrameSource:
    """Download (or find in the cache) the task's media and open it; the files stay pinned until `stack` closes."""
    paths = resolver.fetch_many(refs, task_id=task_id) if len(refs) > 1 else [resolver.fetch(refs[0], task_id=task_id)]
    stack.enter_context(resolver.pinned(paths))
    limits = {"max_pixels": resolver.settings.max_frame_pixels, "max_frames": resolver.settings.max_video_frames}
    try:
        if isinstance(shape, FramesShape):
            return ImageSequenceSource(paths, **limits)
        return VideoFileSource(paths[0], **limits)
    except FrameError as e:
        what = "frames" if isinstance(shape, FramesShape) else "video"
        raise MediaError(f"task {task_id}: the {what} could not be decoded ({e}); re-import valid media",
                         status=400) from None


def latest_of(items: object) -> dict | None:
    """The newest usable (result is a list, not cancelled) of annotations, drafts or predictions; None if none."""
    usable = [a for a in (items or []) if isinstance(a, Mapping) and isinstance(a.get("result"), list)
              and not a.get("was_cancelled")]
    return max(usable, key=lambda a: (str(a.get("updated_at") or a.get("created_at") or ""), a.get("id") or 0),
               default=None)


def prompt_results(task: Mapping) -> list[dict]:
    """Results that may hold prompts: the latest annotation's, then the latest draft's (a draft is newer work)."""
    out: list[dict] = []
    for key in ("annotations", "drafts"):
        latest = latest_of(task.get(key))
        if latest is not None:
            out.extend(r for r in latest["result"] if isinstance(r, dict))
    return out


def reference_results(predictions: object, model_version: str) -> dict[str, dict]:
    """Region id -> result of our latest prediction (this model version first), to tell corrections from accepted
    output; {} when there is none."""
    preds = [p for p in (predictions or []) if isinstance(p, Mapping) and isinstance(p.get("result"), list)]
    ours = [p for p in preds if p.get("model_version") == model_version] or preds
    latest = latest_of(ours)
    return {r["id"]: r for r in (latest or {}).get("result", []) if isinstance(r, dict) and isinstance(r.get("id"), str)}


def has_prompt_tools(results: list[dict], shape: TaskShape) -> bool:
    """Whether any result could be a prompt for this shape (cheap check before downloading media)."""
    names = ({shape.keypoint_name, shape.rect_name, shape.brush_name} - {None} if isinstance(shape, FramesShape)
             else {shape.rect_name})
    return any(r.get("from_name") in names for r in results)


def draft_region_ids(task: Mapping) -> list[str]:
    """Region ids of the task's latest draft. In an interactive request LS sends only the prompting user's drafts,
    so these regions are that user's (their annotation in progress, as the editor last autosaved it)."""
    latest = latest_of(task.get("drafts"))
    return [r["id"] for r in (latest or {}).get("result", []) if isinstance(r, dict) and isinstance(r.get("id"), str)]


def prompt_groups(task: Mapping) -> list[list[str]]:
    """Region ids of what `prompt_results` reads, per source: [latest annotation's, latest draft's]. They may be two
    users' work, so a rebuild keeps them apart (each is a scope of its own unless they share regions)."""
    out = []
    for key in ("annotations", "drafts"):
        latest = latest_of(task.get(key))
        out.append([r["id"] for r in (latest or {}).get("result", []) if isinstance(r, dict)
                    and isinstance(r.get("id"), str)])
    return out
