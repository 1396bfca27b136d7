"""Run the same prompt script on the official sam2 predictor (the oracle) and on our engine.

A scenario is a list of steps; each runner returns {step index: {frame: logits [N, H, W]}} for the
steps that produce masks, with objects in the order they were first prompted.
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


@dataclass(frozen=True)
class Mask:
    frame: int
    obj: int
    png: str  # path of a 0/1 palette PNG at video resolution


@dataclass(frozen=True)
class Propagate:
    start: int | None = None
    reverse: bool = False


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
                    _, _, m = self.model.add_new_points_or_box(self.state, s.frame, s.obj, points=pts, labels=list(s.labels))
                    out[i] = {s.frame: m[:, 0].numpy()}
                elif isinstance(s, Mask):
                    _, _, m = self.model.add_new_mask(self.state, s.frame, s.obj, load_mask(s.png))
                    out[i] = {s.frame: m[:, 0].numpy()}
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
                out[i] = {s.frame: e.add_points(ses, s.frame, s.obj, points=pts, labels=list(s.labels)).logits}
            elif isinstance(s, Mask):
                out[i] = {s.frame: e.add_mask(ses, s.frame, s.obj, load_mask(s.png)).logits}
            else:
                out[i] = {r.frame: r.logits for r in e.propagate(ses, start=s.start, reverse=s.reverse)}
        return out


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
