"""The frames project the e2e tests use, set up as in test_backend_e2e.py: JPEG frames of a clip under LS's
local-files root, a local storage over them (not synced), tasks whose `frames` are `/data/local-files/?d=...` URLs,
and the backend connected as an interactive ML backend with basic auth."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests import appkit as kit
from tests.e2e.backend_server import AUTH
from tests.e2e.ls_server import FRAMES_CONFIG, LSApi


@dataclass(frozen=True)
class FramesProject:
    project: int
    ml: int  # ML backend id in LS
    tasks: list[int]
    size: tuple[int, int]  # (width, height) of the frames
    frames: list[str]  # the task's frame URLs, frame i at index i


def frame_urls(folder: str, count: int) -> list[str]:
    return [f"/data/local-files/?d={folder}/{i:05d}.jpg" for i in range(count)]


def create_frames_project(api: LSApi, media_root: Path, clip: Path, backend_url: str, *, count: int,
                          folder: str, title: str, task_data: list[dict] | None = None) -> FramesProject:
    """Extract the first `count` frames of `clip` into `media_root/folder`, create the project with FRAMES_CONFIG,
    import one task per `task_data` dict (its data as is; default: one task `{"frames": <all frame URLs>}`) and
    connect the backend at `backend_url`."""
    size = kit.extract_frames(clip, Path(media_root) / folder, count)
    project = api.create_project(title, FRAMES_CONFIG)
    api.add_local_storage(project, Path(media_root) / folder, sync=False)
    frames = frame_urls(folder, count)
    tasks = api.import_tasks(project, task_data if task_data is not None else [{"frames": frames}])
    ml = api.connect_ml(project, backend_url, basic_auth=AUTH)
    return FramesProject(project, ml, tasks, size, frames)
