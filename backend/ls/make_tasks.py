"""Turn a video into Label Studio "frames" tasks: JPEG frames on disk, served by LS as local files.

    python -m backend.ls.make_tasks VIDEO --out-dir DIR --document-root ROOT [--stride N | --fps F]
        [--max-frames-per-task 200] [--jpeg-quality 90] [--video-ref REF]
        [--label-studio-url URL --api-key KEY --project ID] [--tasks-json FILE] [--allow-partial]

Frames are decoded with OpenCV one at a time (the video is never held in memory) and written as
`<out-dir>/<video stem>/<source frame index, 5+ digits>.jpg`, e.g. `00000.jpg`, `00010.jpg` with `--stride 10`.
Frame indices are 0-based positions in the decoded stream. Container frame counts can be wrong; when fewer frames
decode than the container declares (a truncated AVI declaring 444 and decoding 60, a damaged MP4), make_tasks says so
with both counts and the first frame that does not decode, deletes the JPEGs it wrote, imports nothing and exits 2,
unless `--allow-partial` accepts importing the frames that decode. One missing trailing frame is only a warning
(MP4 headers often count one frame more than any decoder returns, e.g. box.mp4: 456 declared, 455 decode). The
backend's count of the same video (`backend.engine.frames.count_frames`) is the number of frames that decode too,
so both agree (tests/test_frame_count.py).

Selection: every `stride`-th source frame starting at 0. `--fps F` picks `stride = max(1, round(source_fps / F))`
(halves round up), so the selection stays evenly spaced and the effective fps is `source_fps / stride` (None when the
container has no frame rate). Selected frames are split into consecutive tasks of at most `--max-frames-per-task`.

Each task's data: `{"frames": [url, ...], "video": REF, "frame_start": first source frame index of the task,
"frame_stride": stride, "fps": effective fps}`; so item k of `frames` is source frame `frame_start + k * frame_stride`.
URLs are `/data/local-files/?d=<path relative to the document root>` (percent-encoded like LS's own local storage),
which LS serves only when a local-files storage of the project covers the folder.

With `--project` the tasks are imported through the LS API (`backend.ls.lsclient`) after making sure such a storage
exists; the storage is created but never synced, because a sync would import every JPEG as a task of its own.
Without `--project` the LS import JSON (`[{"data": {...}}, ...]`) goes to `--tasks-json` or stdout.
Exit status: 0 ok, 2 bad input (missing/corrupt video, frames lost without --allow-partial, bad options, out dir not
under the document root),
1 Label Studio refused or could not be reached.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from backend.ls.errors import BackendError
from backend.ls.lsclient import LabelStudioClient, TokenProvider

logger = logging.getLogger(__name__)

LOCAL_FILES_PREFIX = "/data/local-files/?d="
DOCUMENT_ROOT_ENV = ("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT", "LOCAL_FILES_DOCUMENT_ROOT")


TRAILING_FRAME_TOLERANCE = 1  # declared-but-undecodable frames at the end that only warrant a warning


class MakeTasksError(Exception):
    """Bad input: the message is one sentence for the user; the CLI exits with status 2."""


def check_decoded(declared: int | None, decoded: int, video_name: str, *, allow_partial: bool) -> str | None:
    """Compare the container's frame count with the frames that decoded (both counts of the whole source video).

    Returns a warning (or None) when the import may go on; raises MakeTasksError when more than
    TRAILING_FRAME_TOLERANCE declared frames did not decode and `allow_partial` is False.
    """
    if not declared or decoded >= declared:
        return None
    lost = declared - decoded
    what = (f"Video {video_name}: the container declares {declared} frames but only {decoded} decode (0-{decoded - 1}); "
            f"frame {decoded} is the first that does not decode ({lost} frame{'s' if lost > 1 else ''} lost)")
    if lost <= TRAILING_FRAME_TOLERANCE:
        return what + "; importing the frames that decode."
    if allow_partial:
        return what + "; --allow-partial given, importing the frames that decode."
    raise MakeTasksError(what + ". Nothing was imported. Re-encode the video (e.g. ffmpeg -i IN -c:v libx264 "
                                "-pix_fmt yuv420p OUT.mp4) or pass --allow-partial to import the frames that decode.")


# -- pure parts ------------------------------------------------------------------------------------------------------
def stride_for(source_fps: float | None, *, stride: int | None = None, fps: float | None = None) -> int:
    """Source-frame step: `stride` as given, or `max(1, round(source_fps / fps))` (halves up) for a target `fps`.

    Neither given -> 1 (every frame). Raises MakeTasksError for a non-positive value or `fps` without a known
    `source_fps`.
    """
    if stride is not None and fps is not None:
        raise MakeTasksError("--stride and --fps are mutually exclusive; give one of them.")
    if stride is not None:
        if stride < 1:
            raise MakeTasksError(f"--stride must be 1 or more, got {stride}.")
        return int(stride)
    if fps is None:
        return 1
    if not fps > 0:
        raise MakeTasksError(f"--fps must be positive, got {fps}.")
    if not source_fps or source_fps <= 0:
        raise MakeTasksError("The video does not state its frame rate, so --fps cannot be applied; use --stride.")
    return max(1, int(source_fps / fps + 0.5))


def effective_fps(source_fps: float | None, stride: int) -> float | None:
    """Frames per second of the selected frames: `source_fps / stride`, None if the source rate is unknown."""
    return source_fps / stride if source_fps and source_fps > 0 else None


def split_into_tasks(num_frames: int, stride: int, max_per_task: int) -> list[range]:
    """Source frame indices of each task: `range(0, num_frames, stride)` cut into consecutive runs of `max_per_task`.

    E.g. (455, 1, 200) -> [range(0, 200), range(200, 400), range(400, 455)]; each range's `.start` is the task's
    `frame_start` and its `.step` the stride.
    """
    if stride < 1 or max_per_task < 1:
        raise ValueError(f"stride and max_per_task must be >= 1, got {stride} and {max_per_task}")
    span = stride * max_per_task
    return [range(start, min(start + span, num_frames), stride) for start in range(0, num_frames, span)]


def frame_filename(index: int) -> str:
    """JPEG file name of source frame `index` (0-based): 5 digits zero-padded, more when needed."""
    return f"{index:05d}.jpg"


def relative_to_root(path: Path, document_root: Path, *, allow_root: bool = False) -> Path:
    """`path` relative to `document_root` after resolving both (symlinks, `..`).

    MakeTasksError if `path` is outside the root, or is the root itself and `allow_root` is False.
    """
    root, full = document_root.resolve(), path.resolve()
    if (full == root and not allow_root) or not full.is_relative_to(root):
        raise MakeTasksError(f"{path} is not inside the Label Studio document root {document_root}; choose an "
                             f"--out-dir inside LOCAL_FILES_DOCUMENT_ROOT.")
    return full.relative_to(root)


def local_files_url(relative_path: Path | str) -> str:
    """`/data/local-files/?d=<relative path>` with the path percent-encoded as LS itself does (`quote`, '/' kept)."""
    rel = Path(relative_path).as_posix().lstrip("/")
    return LOCAL_FILES_PREFIX + quote(rel, safe="/")


def build_tasks(chunks: list[range], frames_rel_dir: Path, video_ref: str, fps: float | None) -> list[dict]:
    """LS import JSON (`[{"data": {...}}]`) for `chunks` from `split_into_tasks`, frames in `frames_rel_dir`."""
    tasks = []
    for chunk in chunks:
        frames = [local_files_url(frames_rel_dir / frame_filename(i)) for i in chunk]
        tasks.append({"data": {"frames": frames, "video": video_ref, "frame_start": chunk.start,
                               "frame_stride": chunk.step, "fps": fps}})
    return tasks


def storage_covers(storage_path: str, folder: Path) -> bool:
    """True if an LS local-files storage rooted at `storage_path` serves files directly in `folder`.

    Same rule as LS 1.23.2 `localfiles_data`: the folder equals the storage path or lies below it (no symlink
    resolution; both are compared as normalized absolute paths).
    """
    root = os.path.normpath(storage_path).rstrip(os.sep)
    folder_s = os.path.normpath(str(folder))
    return bool(root) and (folder_s == root or folder_s.startswith(root + os.sep))


# -- decoding --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Extracted:
    """What `extract_frames` decoded: `num_frames` source frames in total (all decodable ones), `written` JPEGs."""

    num_frames: int
    written: int
    source_fps: float | None
    width: int
    height: int
    declared_frames: int | None = None  # the container's frame count (None when it states none)
    files: tuple[Path, ...] = ()  # the JPEGs written, in order


def open_video(path: Path):
    """(opened cv2.VideoCapture, source fps or None) for `path`; MakeTasksError if missing or OpenCV cannot open it."""
    import cv2

    if not path.is_file():
        raise MakeTasksError(f"Video {path} does not exist.")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise MakeTasksError(f"Video {path} cannot be opened (corrupt or unsupported format).")
    return cap, float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or None


def extract_frames(cap, frames_dir: Path, *, stride: int, jpeg_quality: int, video_name: str,
                   source_fps: float | None = None) -> Extracted:
    """Decode `cap` to the end, writing every `stride`-th frame (from 0) as `frames_dir/frame_filename(i)`.

    Streaming: one frame in memory at a time; skipped frames are only grabbed. Each JPEG is written to a temporary
    name and renamed, so LS never serves a half-written file. Releases `cap`.
    """
    import cv2

    frames_dir.mkdir(parents=True, exist_ok=True)
    params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    n = written = 0
    width = height = 0
    files: list[Path] = []
    try:
        while True:
            if n % stride:
                if not cap.grab():
                    break
            else:
                ok, bgr = cap.read()
                if not ok:
                    break
                height, width = bgr.shape[:2]
                ok, buf = cv2.imencode(".jpg", bgr, params)
                if not ok:
                    raise MakeTasksError(f"OpenCV could not encode frame {n} of {video_name} as JPEG.")
                target = frames_dir / frame_filename(n)
                tmp = target.with_name(target.name + ".part")
                tmp.write_bytes(buf.tobytes())
                os.replace(tmp, target)
                files.append(target)
                written += 1
            n += 1
    finally:
        cap.release()
    if written == 0:
        raise MakeTasksError(f"Video {video_name} has no decodable frames (corrupt or unsupported format).")
    logger.info("decoded %d frames of %s, wrote %d JPEGs to %s", n, video_name, written, frames_dir)
    return Extracted(num_frames=n, written=written, source_fps=source_fps, width=width, height=height,
                     declared_frames=declared, files=tuple(files))


# -- Label Studio ----------------------------------------------------------------------------------------------------
def ensure_storage(client: LabelStudioClient, project_id: int, folder: Path, storages: list[dict] | None = None) -> int:
    """Id of a local-files storage of the project covering `folder` (absolute, as LS sees it), created if none does.

    `storages`: the project's storages if already listed. The storage is not synced: it only grants LS permission
    to serve the folder's files (LS checks that the folder exists, so call this after writing the frames).
    """
    if storages is None:
        storages = client.list_local_storages(project_id)
    for storage in storages:
        if storage_covers(str(storage.get("path") or ""), folder):
            logger.info("local-files storage %s (%s) already covers %s", storage["id"], storage["path"], folder)
            return int(storage["id"])
    created = client.create_local_storage(project_id, str(folder), title=f"frames: {folder.name}")
    logger.info("created local-files storage %s for %s", created["id"], folder)
    return int(created["id"])


# -- CLI -------------------------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _quality(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 100:
        raise argparse.ArgumentTypeError(f"must be between 1 and 100, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    env_root = next((os.environ[k] for k in DOCUMENT_ROOT_ENV if os.environ.get(k)), None)
    p = argparse.ArgumentParser(prog="python -m backend.ls.make_tasks",
                                description="Write a video's frames as JPEGs and make Label Studio frames tasks.")
    p.add_argument("video", metavar="VIDEO", type=Path, help="video file to decode")
    p.add_argument("--out-dir", type=Path, required=True,
                   help="folder under the LS document root; frames go to OUT_DIR/<video stem>/")
    p.add_argument("--document-root", type=Path, default=env_root, required=env_root is None,
                   help="LS LOCAL_FILES_DOCUMENT_ROOT (default: $LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT or "
                        "$LOCAL_FILES_DOCUMENT_ROOT)")
    sel = p.add_mutually_exclusive_group()
    sel.add_argument("--stride", type=_positive_int, help="keep every N-th source frame (default 1)")
    sel.add_argument("--fps", type=_positive_float, help="keep about F frames per second (stride = round(fps/F))")
    p.add_argument("--max-frames-per-task", type=_positive_int, default=200,
                   help="split longer selections into consecutive tasks (default 200)")
    p.add_argument("--jpeg-quality", type=_quality, default=90, help="JPEG quality 1-100 (default 90)")
    p.add_argument("--video-ref", help="value of data.video in each task (default: the video's absolute path)")
    p.add_argument("--label-studio-url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio address (default $LABEL_STUDIO_URL)")
    p.add_argument("--api-key", default=os.environ.get("LABEL_STUDIO_API_KEY"),
                   help="legacy token or Personal Access Token (default $LABEL_STUDIO_API_KEY)")
    p.add_argument("--project", type=int, help="import the tasks into this LS project")
    p.add_argument("--tasks-json", type=Path, help="write the tasks JSON here (default stdout when no --project)")
    p.add_argument("--allow-partial", action="store_true",
                   help="import the frames that decode even when the container declares more (default: refuse)")
    p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    return p


def run(args: argparse.Namespace) -> dict:
    """Do the work for parsed `args`; returns a summary dict. Raises MakeTasksError or BackendError."""
    if args.project is not None and not (args.label_studio_url and args.api_key):
        raise MakeTasksError("--project needs --label-studio-url and --api-key (or LABEL_STUDIO_URL and "
                             "LABEL_STUDIO_API_KEY).")
    video: Path = args.video
    frames_dir = args.out_dir / video.stem
    frames_rel = relative_to_root(args.out_dir, args.document_root, allow_root=True) / video.stem
    cap, source_fps = open_video(video)
    client = storages = None
    try:
        stride = stride_for(source_fps, stride=args.stride, fps=args.fps)
        if args.project is not None:  # reach LS before decoding: a wrong URL, key or project fails fast
            client = LabelStudioClient(args.label_studio_url, TokenProvider(args.label_studio_url, args.api_key))
            try:
                storages = client.list_local_storages(args.project)
            except BackendError as exc:
                if exc.status == 404:
                    raise MakeTasksError(f"Label Studio has no project {args.project}; check --project.") from exc
                raise
    except BaseException:
        cap.release()
        raise
    got = extract_frames(cap, frames_dir, stride=stride, jpeg_quality=args.jpeg_quality, video_name=video.name,
                         source_fps=source_fps)
    try:
        warning = check_decoded(got.declared_frames, got.num_frames, video.name,
                                allow_partial=getattr(args, "allow_partial", False))
    except MakeTasksError:
        for f in got.files:  # a refused import leaves nothing behind for LS to serve
            f.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            frames_dir.rmdir()
        raise
    chunks = split_into_tasks(got.num_frames, stride, args.max_frames_per_task)
    video_ref = args.video_ref or str(video.resolve())
    tasks = build_tasks(chunks, frames_rel, video_ref, effective_fps(got.source_fps, stride))
    summary = {"video": video_ref, "frames_dir": str(frames_dir), "source_frames": got.num_frames,
               "declared_frames": got.declared_frames, "warning": warning,
               "frames": got.written, "stride": stride, "fps": effective_fps(got.source_fps, stride),
               "width": got.width, "height": got.height, "tasks": len(tasks)}
    if args.tasks_json:
        args.tasks_json.write_text(json.dumps(tasks, indent=1))
    if client is not None:
        # the storage path as LS sees it: LS compares paths textually under its (unresolved) document root
        storage_dir = Path(os.path.abspath(args.document_root)) / frames_rel
        summary["storage_id"] = ensure_storage(client, args.project, storage_dir, storages)
        result = client.import_tasks(args.project, tasks)
        summary["project"] = args.project
        summary["imported"] = (result or {}).get("task_count")
        logger.info("imported %s tasks into project %s", summary["imported"], args.project)
    summary["task_list"] = tasks
    return summary


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the exit status (0 ok, 1 Label Studio failed, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    try:
        summary = run(args)
    except MakeTasksError as exc:
        sys.stderr.write(f"make_tasks: error: {exc}\n")
        return 2
    except BackendError as exc:
        sys.stderr.write(f"make_tasks: error: {exc}\n")
        return 1
    tasks = summary.pop("task_list")
    if summary.get("warning"):
        sys.stderr.write(f"make_tasks: warning: {summary['warning']}\n")
    if args.project is None and args.tasks_json is None:
        sys.stdout.write(json.dumps(tasks, indent=1) + "\n")
    else:
        sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
