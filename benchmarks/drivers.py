"""One backend behind one interface: the model family's own torch predictor, or the OpenVINO engine.

Both read the same JPEG frames and use the same random-init weights (the export's manifest names the seed and
weights fingerprint; `tests.models.build_oracle` checks it). The torch driver runs in the interpreter whose
`sam2` builds the model: sam2 1.1.0 for SAM 2.1, EdgeTAM's fork (`.venv-edgetam`) for EdgeTAM.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from tests import models


class TorchDriver:
    """sam2's SAM2VideoPredictor with the export's weights; counts `forward_image` (image encoder) calls."""

    def __init__(self, model_dir: Path, frames_dir: Path, threads: int):
        import warnings
        warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")
        import torch
        if threads:
            torch.set_num_threads(threads)
        self.torch, self.frames_dir, self.encoder_calls = torch, frames_dir, 0
        self.model = models.build_oracle(model_dir, add_all_frames_to_correct_as_cond=True, fill_hole_area=0)
        forward = self.model.forward_image

        def counted(img):
            self.encoder_calls += 1
            return forward(img)
        self.model.forward_image = counted
        self.precision = {"requested": "f32", "resolved": "f32", "openvino": None}
        self.frame_times: list = []

    def start(self) -> None:
        with self.torch.inference_mode():
            self.state = self.model.init_state(str(self.frames_dir), offload_video_to_cpu=True)

    def box(self, obj: int, box) -> None:
        with self.torch.inference_mode():
            self.model.add_new_points_or_box(self.state, 0, obj, box=list(box))

    def mask(self, frame: int, obj: int, mask: np.ndarray) -> None:
        with self.torch.inference_mode():
            self.model.add_new_mask(self.state, frame, obj, mask)

    def propagate(self, start: int | None, max_frames: int | None = None, objects=None) -> dict[int, np.ndarray]:
        """sam2 re-tracks every object (`objects` is the engine's choice only)."""
        with self.torch.inference_mode():
            return timed_frames(((f, (m[:, 0] > 0).numpy()) for f, _, m in self.model.propagate_in_video(
                self.state, start_frame_idx=start, max_frame_num_to_track=max_frames)), self.frame_times)

    def correction_click(self, frame: int, obj: int, point) -> None:
        with self.torch.inference_mode():
            self.model.add_new_points_or_box(self.state, frame, obj, points=[point], labels=[1], clear_old_points=False)

    new_object_click = None  # sam2 refuses new object ids once tracking has started (reset_state first)

    def close(self) -> None:
        self.state = None  # frees the frames and features


class EngineDriver:
    """The OpenVINO engine; each session gets a fresh VideoPredictor (empty feature cache) over one Runtime."""

    def __init__(self, model_dir: Path, frames_dir: Path, threads: int, precision: str):
        from backend.engine import EngineSettings, VideoPredictor
        batch = os.environ.get("ATTENTION_BATCH", "auto").strip().lower()  # as the service reads it
        self.settings = EngineSettings(model_dir=model_dir, precision=precision, threads=threads, fill_hole_area=0,
                                       attention_batch=None if batch in ("", "auto") else int(batch))
        predictor = VideoPredictor(self.settings)
        self.runtime = predictor.runtime
        self.attention_batch = predictor.tracker.attention_batch  # ATTENTION_BATCH or what `auto` chose here
        self.frames_dir = frames_dir
        ov = self.runtime.compiled_property("image_encoder", "INFERENCE_PRECISION_HINT")
        self.precision = {"requested": precision, "resolved": self.runtime.precision, "openvino": ov.to_string()}
        self.frame_times: list = []
        self.graph_calls: dict = {}  # (graph, input shapes) -> [calls, seconds]
        run = self.runtime.run

        def recorded(graph, **inputs):
            t0, c0 = time.perf_counter(), time.process_time()
            out = run(graph, **inputs)
            key = (graph, tuple(sorted((k, tuple(np.shape(v))) for k, v in inputs.items())))
            rec = self.graph_calls.setdefault(key, [0, 0.0, 0.0])
            rec[0] += 1
            rec[1] += time.perf_counter() - t0
            rec[2] += time.process_time() - c0  # process CPU: OpenVINO's threads work for this call
            return out
        self.runtime.run = recorded

    @property
    def encoder_calls(self) -> int:
        return self.runtime.calls("image_encoder")

    def start(self) -> None:
        from backend.engine import VideoPredictor, open_source
        self.engine = VideoPredictor(self.settings, runtime=self.runtime)
        self.session = self.engine.start_session(open_source(self.frames_dir))

    def box(self, obj: int, box) -> None:
        self.engine.add_points(self.session, 0, obj, box=box)

    def mask(self, frame: int, obj: int, mask: np.ndarray) -> None:
        self.engine.add_mask(self.session, frame, obj, mask)

    def propagate(self, start: int | None, max_frames: int | None = None, objects=None) -> dict[int, np.ndarray]:
        """objects: re-track only these (the engine's answer to a correction); the others keep their results."""
        return timed_frames(((r.frame, r.logits > 0) for r in self.engine.propagate(
            self.session, start=start, max_frames=max_frames, objects=objects)), self.frame_times)

    # a click's timing includes every object's logits at video resolution, as sam2 returns them (the engine's
    # FrameResult resizes lazily; the LS adapter resizes only the objects whose output changed)
    def correction_click(self, frame: int, obj: int, point) -> None:
        self.engine.add_points(self.session, frame, obj, points=[point], labels=[1], clear_old_points=False).logits

    def new_object_click(self, frame: int, obj: int, box) -> None:
        self.engine.add_points(self.session, frame, obj, box=box).logits

    def forget(self, obj: int) -> None:
        self.engine.remove_object(self.session, obj)

    def close(self) -> None:
        self.engine.close_session(self.session)


def timed_frames(results, times: list) -> dict[int, np.ndarray]:
    """Drain a propagation generator; append (frame, wall s, CPU s) per yielded frame to `times`."""
    out = {}
    times.clear()
    t, c = time.perf_counter(), time.process_time()
    for frame, masks in results:
        t1, c1 = time.perf_counter(), time.process_time()
        times.append((int(frame), t1 - t, c1 - c))
        out[int(frame)] = masks
        t, c = t1, c1
    return out
