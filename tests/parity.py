"""Run the same prompt script on the official sam2 predictor (the oracle) and on our engine.

A scenario is a list of steps; each runner returns {step index: {frame: logits [N, H, W]}} for the
steps that produce masks, with objects in the order they were first prompted (removed objects drop out).
`mirrored(steps)` is the same script with every prompt mirrored through the image centre: the contrast a
scenario's reference must differ from to prove the scenario can tell a correct engine from one that ignores
prompts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Box:
    frame: int
    obj: int
    box: tuple  # fractions of (W, H, W, H)


@dataclass(frozen=True)
class Points:
    frame: int
    obj: int
    points: tuple  # ((fx, fy), ...) fractions of W, H
    labels: tuple
    clear_old: bool = True


@dataclass(frozen=True)
class Mask:
    frame: int
    obj: int
    png: str  # path of a 0/1 palette PNG at video resolution
    u8: bool = False  # pass it as a 0/255 uint8 array (sam2 makes any non-zero value foreground)
    mirror: bool = False


@dataclass(frozen=True)
class Clear:
    """Remove one object's prompts on one frame (sam2's clear_all_prompts_in_frame)."""
    frame: int
    obj: int


@dataclass(frozen=True)
class Remove:
    obj: int


@dataclass(frozen=True)
class Propagate:
    start: int | None = None
    reverse: bool = False


def mirrored(steps) -> list:
    """The script with every prompt mirrored through the image centre (x, y -> 1 - x, 1 - y)."""
    out = []
    for s in steps:
        if isinstance(s, Box):
            x0, y0, x1, y1 = s.box
            out.append(Box(s.frame, s.obj, (1 - x1, 1 - y1, 1 - x0, 1 - y0)))
        elif isinstance(s, Points):
            out.append(Points(s.frame, s.obj, tuple((1 - x, 1 - y) for x, y in s.points), s.labels, s.clear_old))
        elif isinstance(s, Mask):
            out.append(Mask(s.frame, s.obj, s.png, s.u8, not s.mirror))
        else:
            out.append(s)
    return out


def mask_of(step: Mask) -> np.ndarray:
    m = load_mask(step.png)
    if step.mirror:
        m = m[::-1, ::-1].copy()
    return (m.astype(np.uint8) * 255) if step.u8 else m


def _scale(frac, w, h):
    return [f * (w if i % 2 == 0 else h) for i, f in enumerate(frac)]


def load_mask(path: str) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path)) > 0


class OracleRunner:
    def __init__(self, model, frames_dir: Path):
        import torch
        self.torch = torch
        self.model = model
        with torch.inference_mode():
            self.state = model.init_state(str(frames_dir), offload_video_to_cpu=True)
        self.h, self.w = self.state["video_height"], self.state["video_width"]

    def run(self, steps) -> dict:
        out = {}
        with self.torch.inference_mode():
            for i, s in enumerate(steps):
                if isinstance(s, Box):
                    _, _, m = self.model.add_new_points_or_box(self.state, s.frame, s.obj, box=_scale(s.box, self.w, self.h))
                    out[i] = {s.frame: m[:, 0].numpy()}
                elif isinstance(s, Points):
                    pts = [_scale(p, self.w, self.h) for p in s.points]
                    _, _, m = self.model.add_new_points_or_box(self.state, s.frame, s.obj, points=pts,
                                                               labels=list(s.labels), clear_old_points=s.clear_old)
                    out[i] = {s.frame: m[:, 0].numpy()}
                elif isinstance(s, Mask):
                    _, _, m = self.model.add_new_mask(self.state, s.frame, s.obj, mask_of(s))
                    out[i] = {s.frame: m[:, 0].numpy()}
                elif isinstance(s, Clear):
                    _, _, m = self.model.clear_all_prompts_in_frame(self.state, s.frame, s.obj)
                    out[i] = {s.frame: m[:, 0].numpy()}
                elif isinstance(s, Remove):
                    self.model.remove_object(self.state, s.obj)
                else:
                    out[i] = {f: m[:, 0].numpy().copy() for f, _, m in
                              self.model.propagate_in_video(self.state, start_frame_idx=s.start, reverse=s.reverse)}
        return out


class EngineRunner:
    def __init__(self, engine, frames_dir: Path):
        from backend.engine import open_source
        self.engine = engine
        self.session = engine.start_session(open_source(frames_dir))
        self.h, self.w = self.session.height, self.session.width

    def run(self, steps) -> dict:
        out = {}
        e, ses = self.engine, self.session
        for i, s in enumerate(steps):
            if isinstance(s, Box):
                out[i] = {s.frame: e.add_points(ses, s.frame, s.obj, box=_scale(s.box, self.w, self.h)).logits}
            elif isinstance(s, Points):
                pts = [_scale(p, self.w, self.h) for p in s.points]
                out[i] = {s.frame: e.add_points(ses, s.frame, s.obj, points=pts, labels=list(s.labels),
                                                clear_old_points=s.clear_old).logits}
            elif isinstance(s, Mask):
                out[i] = {s.frame: e.add_mask(ses, s.frame, s.obj, mask_of(s)).logits}
            elif isinstance(s, Clear):
                out[i] = {s.frame: e.clear_prompts(ses, s.frame, s.obj).logits}
            elif isinstance(s, Remove):
                e.remove_object(ses, s.obj)
            else:
                out[i] = {r.frame: r.logits for r in e.propagate(ses, start=s.start, reverse=s.reverse)}
        return out


def logit_error(ref: np.ndarray, got: np.ndarray) -> float:
    """max |got - ref| / max |ref| for one object's logits on one frame (the per-graph export test's measure)."""
    return float(np.abs(got.astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-6))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of the masks (logits > 0); 1.0 when both are empty."""
    a, b = a > 0, b > 0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def frame_agreement(ref: np.ndarray, got: np.ndarray, min_fg: float = 1e-3) -> list[tuple[str, float]]:
    """Per object: ("iou", IoU of the masks) or, where a mask is (nearly) empty or full,
    ("logit", max |logit difference| / max(1, max |ref|)) because IoU says nothing there."""
    res = []
    for r, g in zip(ref, got):
        a, b = r > 0, g > 0
        frac = max(a.mean(), b.mean())
        low = min(a.mean(), b.mean())
        if frac < min_fg or low > 1 - min_fg:
            res.append(("logit", float(np.abs(r - g).max() / max(1.0, np.abs(r).max()))))
        else:
            res.append(("iou", float((a & b).sum() / (a | b).sum())))
    return res
