"""CVAT tests: frames of a real clip as CVAT sends them (base64 JPEG), and the engine on the 128 px random model."""
import base64
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from backend.cvat.tracker import CvatTracker
from backend.engine import EngineSettings, VideoPredictor
from backend.settings import CvatSettings
from tests import appkit as kit

FRAMES = 20  # > 16 (SAM 2's object-pointer window) so the adapter's memory trimming is exercised


class Clip:
    def __init__(self, paths, size, masks_dir):
        self.paths = paths
        self.width, self.height = size
        self.b64 = [base64.b64encode(p.read_bytes()).decode() for p in paths]
        self.masks_dir = masks_dir

    def object_mask(self, frame: int) -> np.ndarray:
        """The clip's approximate cup mask on `frame` (bool [H, W])."""
        return np.asarray(Image.open(self.masks_dir / f"{frame:05d}.png")) == 1


@pytest.fixture(scope="session")
def clip(tmp_path_factory, clips_dir) -> Clip:
    root = tmp_path_factory.mktemp("cvat-cup")
    size = kit.extract_frames(clips_dir / "cup.mp4", root, FRAMES)
    return Clip(sorted(root.glob("*.jpg")), size, clips_dir / "cup_masks")


@pytest.fixture(scope="session")
def predictor(model_128_f32) -> VideoPredictor:
    return VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32"))


@pytest.fixture
def make_tracker(predictor):
    made = []

    def factory(**overrides) -> CvatTracker:
        clock = overrides.pop("clock", None)
        settings = replace(CvatSettings(), **overrides)
        tracker = CvatTracker(settings, lambda timeout: predictor, **({"clock": clock} if clock else {}))
        made.append(tracker)
        return tracker

    yield factory
    for t in made:
        t.close()
