"""Frame sources and SAM 2 preprocessing."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from backend.engine.frames import FrameError, ImageSequenceSource, VideoFileSource, open_source, preprocess


def _sequential(path, n):
    cap = cv2.VideoCapture(str(path))
    frames = []
    for _ in range(n):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def test_video_frame_count_comes_from_decoding(clips_dir):
    src = VideoFileSource(clips_dir / "box.mp4")
    # the container header claims 456 frames; 455 decode (see the clips README)
    assert src.num_frames == 455
    assert (src.width, src.height) == (640, 480)
    with pytest.raises(FrameError, match="out of range"):
        src.read(455)


def test_random_and_backward_access_equal_sequential_decode(clips_dir):
    ref = _sequential(clips_dir / "cup.mp4", 60)
    src = VideoFileSource(clips_dir / "cup.mp4", cache_frames=8, chunk=4)
    order = [0, 1, 2, 40, 41, 39, 38, 10, 59, 20, 19, 18, 17, 16, 15, 3, 58, 57]
    for i in order:
        assert np.array_equal(src.read(i), ref[i]), f"frame {i} differs"
    for i in range(59, 29, -1):  # a whole backward pass, as reverse propagation reads
        assert np.array_equal(src.read(i), ref[i]), f"frame {i} differs"


def test_corrupt_video_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(0).integers(0, 255, 50_000, dtype=np.uint8).tobytes())
    with pytest.raises(FrameError, match="bad.mp4"):
        VideoFileSource(bad)
    with pytest.raises(FrameError, match="does not exist"):
        open_source(tmp_path / "missing.mp4")


def test_image_sequence_checks_sizes_and_readability(tmp_path):
    for i, size in enumerate([(40, 30), (40, 30), (50, 30)]):
        cv2.imwrite(str(tmp_path / f"{i:05d}.jpg"), np.full((size[1], size[0], 3), 100, np.uint8))
    (tmp_path / "00003.jpg").write_bytes(b"not an image")
    src = open_source(tmp_path)
    assert src.num_frames == 4 and (src.width, src.height) == (40, 30)
    assert src.read(1).shape == (30, 40, 3)
    with pytest.raises(FrameError, match="one size"):
        src.read(2)
    with pytest.raises(FrameError, match="not a readable image"):
        src.read(3)
    with pytest.raises(FrameError, match="empty"):
        ImageSequenceSource([])


def test_preprocess_matches_sam2_frame_loading(tmp_path, clips_dir):
    from sam2.utils.misc import _load_img_as_tensor
    frame = _sequential(clips_dir / "carphone_pristine.mp4", 1)[0]
    path = tmp_path / "00000.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    img, h, w = _load_img_as_tensor(str(path), 256)
    mean = torch.tensor((0.485, 0.456, 0.406))[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225))[:, None, None]
    ref = ((img.float() - mean) / std).numpy()
    got = preprocess(ImageSequenceSource([path]).read(0), 256, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert got.shape == (1, 3, 256, 256) and (h, w) == (144, 176)
    assert np.abs(got[0] - ref).max() < 1e-6
