"""Detect which supported task shape a Label Studio label config describes (parsed with the SDK's LabelInterface).

Supported shapes:

- "frames" (`FramesShape`): `<Image name=... valueList="$frames"/>` (one image per video frame, the task data key holds
  the list of frame URLs) with a `<BrushLabels toName=image>` (required; the backend answers with brush masks) and,
  optionally, one `<KeyPointLabels>` and one `<RectangleLabels>` on the same image as prompt tools. Every keypoint or
  rectangle label must also be a brush label, because the answer to a prompt is a brush mask with the prompt's label.
- "video" (`VideoShape`): `<Video name=... value="$video" framerate=...>` with a `<VideoRectangle toName=video>` and a
  `<Labels toName=video>` holding the object labels (LS has no brush, keypoint or mask tools on Video).

If a config holds both shapes, "frames" wins (it carries masks); the video tags are then ignored with an info log.
Video framerate follows the LS 1.23.2 editor (`libs/editor/src/tags/object/Video/Video.js`): default "24" when absent
or not a number, and values below 1 are inverted (a frame duration).

Per-instance labels: LS colours regions by label and shows regions with the same label as identical rows, so two cars
labelled "Car" cannot be told apart. Give each object its own label written `<class>#<tag>`, e.g. `Car#1`, `Car#2`
(each `<Label>` with its own `background`); `split_instance_label` splits it at the LAST '#'. The tag must be
non-empty and made of letters, digits, '_' or '-', and the class non-empty; anything else is a plain class label
(so "C#" stays one class).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from label_studio_sdk.label_interface import LabelInterface

from backend.ls.errors import LabelConfigError

logger = logging.getLogger(__name__)

DEFAULT_FRAMERATE = 24.0
"""The LS editor's `<Video framerate>` default (Video.js TagAttrs: `framerate: "24"`)."""

_INSTANCE_RE = re.compile(r"^(?P<cls>.+)#(?P<tag>[A-Za-z0-9_-]+)$")


@dataclass(frozen=True)
class FramesShape:
    """`<Image valueList>` task: `data_key` names the task data list of frame URLs; label tuples keep config order."""

    image_name: str
    data_key: str
    brush_name: str
    brush_labels: tuple[str, ...]
    keypoint_name: str | None = None
    keypoint_labels: tuple[str, ...] = ()
    rect_name: str | None = None
    rect_labels: tuple[str, ...] = ()
    kind: ClassVar[str] = "frames"

    def labels_of(self, control_name: str) -> tuple[str, ...] | None:
        """Label values of one of this shape's controls, or None when the name is not one of them."""
        return {
            self.brush_name: self.brush_labels,
            self.keypoint_name: self.keypoint_labels,
            self.rect_name: self.rect_labels,
        }.get(control_name) if control_name is not None else None


@dataclass(frozen=True)
class VideoShape:
    """`<Video>` task: `framerate` in frames per second; `framerate_key` is set when it comes from task data."""

    video_name: str
    data_key: str
    framerate: float
    rect_name: str
    labels_name: str
    labels: tuple[str, ...]
    framerate_key: str | None = None
    kind: ClassVar[str] = "video"

    def fps(self, task_data: Mapping | None = None) -> float:
        """Frames per second for a task: `framerate`, or the task data value when the config says `framerate="$key"`."""
        if self.framerate_key is None:
            return self.framerate
        value = (task_data or {}).get(self.framerate_key)
        return normalize_framerate(value, where=f"task data '{self.framerate_key}'")


TaskShape = FramesShape | VideoShape


def split_instance_label(label: str) -> tuple[str, str | None]:
    """Per-instance label `Car#1` -> ("Car", "1"); a plain label `Car` -> ("Car", None). See the module docstring."""
    m = _INSTANCE_RE.match(label)
    if m is None:
        return label, None
    return m.group("cls"), m.group("tag")


def normalize_framerate(value: object, *, where: str = "<Video framerate>") -> float:
    """LS editor rule: missing, 0 or not a number -> 24; below 1 -> 1 / value (a frame duration); else the value."""
    try:
        fps = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        logger.info("%s is %r, not a number; using the LS default %s fps", where, value, DEFAULT_FRAMERATE)
        return DEFAULT_FRAMERATE
    if fps != fps or fps == 0:
        return DEFAULT_FRAMERATE
    if fps < 0:
        raise LabelConfigError(f"{where} is {value!r}, but a framerate must be positive; set it to the video's fps")
    return 1.0 / fps if fps < 1 else fps


def _data_key(obj, attr: str) -> str:
    raw = obj.attr.get(attr) or ""
    if not (raw.startswith("$") and len(raw) > 1):
        example = "$frames" if attr == "valueList" else "$video"
        raise LabelConfigError(
            f"<{obj.tag} name=\"{obj.name}\"> has {attr}=\"{raw}\"; it must name a task data field like \"{example}\""
        )
    return raw[1:]


def _targets(control, objects: dict) -> list:
    return [objects[n] for n in control.to_name if n in objects]


def _one(controls: list, what: str, target: str) -> object | None:
    if len(controls) > 1:
        names = ", ".join(f"'{c.name}'" for c in controls)
        raise LabelConfigError(
            f"the label config has {len(controls)} {what} tags on '{target}' ({names}); keep only one"
        )
    return controls[0] if controls else None


def _frames_shape(image, controls: list, brush) -> FramesShape:
    on_image = [c for c in controls if image.name in c.to_name]
    kp = _one([c for c in on_image if c.tag.lower() == "keypointlabels"], "KeyPointLabels", image.name)
    rect = _one([c for c in on_image if c.tag.lower() == "rectanglelabels"], "RectangleLabels", image.name)
    brush_labels = tuple(brush.labels or ())
    if not brush_labels:
        raise LabelConfigError(
            f"<BrushLabels name=\"{brush.name}\"> has no <Label> children; add one <Label> per object"
        )
    for ctrl in (kp, rect):
        missing = [v for v in (ctrl.labels or ()) if v not in brush_labels] if ctrl is not None else []
        if missing:
            raise LabelConfigError(
                f"<{ctrl.tag} name=\"{ctrl.name}\"> has labels {missing} that "
                f"<BrushLabels name=\"{brush.name}\"> lacks; add them to the BrushLabels so prompts can be "
                "answered with masks"
            )
    return FramesShape(
        image_name=image.name,
        data_key=_data_key(image, "valueList"),
        brush_name=brush.name,
        brush_labels=brush_labels,
        keypoint_name=kp.name if kp else None,
        keypoint_labels=tuple(kp.labels or ()) if kp else (),
        rect_name=rect.name if rect else None,
        rect_labels=tuple(rect.labels or ()) if rect else (),
    )


def _video_shape(video, controls: list, vrect) -> VideoShape:
    labels = _one(
        [c for c in controls if c.tag.lower() == "labels" and video.name in c.to_name], "Labels", video.name
    )
    if labels is None:
        raise LabelConfigError(
            f"<VideoRectangle name=\"{vrect.name}\"> on video '{video.name}' has no <Labels toName=\"{video.name}\">; "
            "add one with a <Label> per object"
        )
    if not labels.labels:
        raise LabelConfigError(f"<Labels name=\"{labels.name}\"> has no <Label> children; add one <Label> per object")
    raw = video.get_attr("framerate")
    key = raw[1:] if isinstance(raw, str) and raw.startswith("$") and len(raw) > 1 else None
    fps = DEFAULT_FRAMERATE if raw is None or key is not None else normalize_framerate(raw)
    return VideoShape(
        video_name=video.name,
        data_key=_data_key(video, "value"),
        framerate=fps,
        rect_name=vrect.name,
        labels_name=labels.name,
        labels=tuple(labels.labels),
        framerate_key=key,
    )


def parse_label_config(config: str) -> TaskShape:
    """Label config XML -> `FramesShape` or `VideoShape`; LabelConfigError saying what to change when unsupported."""
    if not isinstance(config, str) or not config.strip():
        raise LabelConfigError("the label config is empty; set the project's labeling interface XML")
    try:
        li = LabelInterface(config)
    except Exception as e:  # the SDK raises plain Exception subclasses for XML errors
        raise LabelConfigError(
            f"the label config is not valid XML ({e}); fix the markup in the project settings"
        ) from e
    objects = {o.name: o for o in li.objects}
    controls = list(li.controls)
    problems: list[str] = []

    frames: list[tuple] = []
    for brush in (c for c in controls if c.tag.lower() == "brushlabels"):
        for obj in _targets(brush, objects):
            if obj.tag.lower() == "image" and obj.attr.get("valueList"):
                frames.append((brush, obj))
            elif obj.tag.lower() == "video":
                problems.append(
                    f"<BrushLabels name=\"{brush.name}\"> targets <Video name=\"{obj.name}\">, but Label Studio has no "
                    "brush on video; use <Image valueList=\"$frames\"> with one image per frame"
                )
            else:
                problems.append(
                    f"<BrushLabels name=\"{brush.name}\"> targets <{obj.tag} name=\"{obj.name}\"> which has no "
                    "valueList; use <Image name=... valueList=\"$frames\"> with one image per frame"
                )
    videos: list[tuple] = []
    for vrect in (c for c in controls if c.tag.lower() == "videorectangle"):
        videos.extend((vrect, o) for o in _targets(vrect, objects) if o.tag.lower() == "video")

    if len(frames) > 1:
        pairs = ", ".join(f"'{b.name}'->'{o.name}'" for b, o in frames)
        raise LabelConfigError(
            f"the label config has {len(frames)} BrushLabels-on-Image-list pairs ({pairs}); keep only one"
        )
    if frames:
        if videos:
            logger.info("label config has both an <Image valueList> brush pair and a <Video>; using the frames shape")
        brush, image = frames[0]
        return _frames_shape(image, controls, brush)
    if len(videos) > 1:
        pairs = ", ".join(f"'{r.name}'->'{o.name}'" for r, o in videos)
        raise LabelConfigError(
            f"the label config has {len(videos)} VideoRectangle-on-Video pairs ({pairs}); keep only one"
        )
    if videos:
        vrect, video = videos[0]
        return _video_shape(video, controls, vrect)
    if problems:
        raise LabelConfigError(problems[0])
    raise LabelConfigError(
        "the label config has no supported tag pair; use <Image valueList=\"$frames\"> with <BrushLabels> "
        "(optionally <KeyPointLabels>/<RectangleLabels>), "
        "or <Video value=\"$video\"> with <VideoRectangle> and <Labels>"
    )
