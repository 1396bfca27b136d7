"""Frame counting without decoding the whole video, its agreement with make_tasks, and frame-size limits (issue 9:
High 3 "opening a video decodes every frame to count them", Medium "decompression bombs", "silent frame loss")."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from backend.engine import frames as frames_mod
from backend.engine.frames import FrameError, ImageSequenceSource, VideoFileSource, count_frames
from backend.ls.make_tasks import extract_frames, open_video
from tests.brokenvideo import damaged_mp4, decoded_count, truncated_avi


class CountingCap:
    """A cv2.VideoCapture that counts grab() calls (each one decodes a frame)."""

    def __init__(self, path):
        self.cap, self.grabs = cv2.VideoCapture(str(path)), 0

    def grab(self):
        self.grabs += 1
        return self.cap.grab()

    def __getattr__(self, name):
        return getattr(self.cap, name)


@pytest.fixture(autouse=True)
def fresh_count_cache(monkeypatch):
    monkeypatch.setattr(frames_mod, "_COUNTS", type(frames_mod._COUNTS)())


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    d = tmp_path_factory.mktemp("broken")
    return {"avi": truncated_avi(d / "cut.avi"), "mp4": damaged_mp4(d / "damaged.mp4")}


def test_a_trustworthy_container_count_is_used_with_two_decodes(clips_dir):
    # before: VideoFileSource grabbed all 217 frames of cup.mp4 just to count them
    cap = CountingCap(clips_dir / "cup.mp4")
    assert count_frames(cap, clips_dir / "cup.mp4") == 217 and cap.grabs == 2


def test_the_count_is_cached_per_file(clips_dir):
    path = clips_dir / "carphone_pristine.mp4"
    first = VideoFileSource(path)
    cap = CountingCap(path)
    assert count_frames(cap, path, key=first.key) == first.num_frames == 120 and cap.grabs == 0


@pytest.mark.parametrize("name", ["box.mp4", "cup.mp4", "carphone_pristine.mp4"])
def test_clip_counts_equal_a_full_decode(clips_dir, name):
    assert VideoFileSource(clips_dir / name).num_frames == decoded_count(clips_dir / name)


@pytest.mark.parametrize("kind", ["avi", "mp4"])
def test_backend_and_make_tasks_agree_on_a_video_that_declares_more_than_decodes(broken, kind, tmp_path):
    path = broken[kind]
    declared = int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))
    n = VideoFileSource(path).num_frames
    cap, fps = open_video(path)
    got = extract_frames(cap, tmp_path / "f", stride=1, jpeg_quality=50, video_name=path.name, source_fps=fps)
    assert n == got.num_frames == decoded_count(path) and got.declared_frames == declared and n < declared - 1
    src = VideoFileSource(path)
    assert src.read(n - 1).shape == (48, 64, 3)
    with pytest.raises(FrameError, match="out of range"):
        src.read(n)


def test_too_many_frames_is_a_frame_error_naming_the_setting(clips_dir, broken):
    with pytest.raises(FrameError, match="MEDIA_MAX_VIDEO_FRAMES"):
        VideoFileSource(clips_dir / "cup.mp4", max_frames=100)  # trusted header path
    with pytest.raises(FrameError, match="MEDIA_MAX_VIDEO_FRAMES"):
        VideoFileSource(broken["avi"], max_frames=10)  # counting path stops after 11 decodes
    with pytest.raises(FrameError, match="MEDIA_MAX_VIDEO_FRAMES"):
        ImageSequenceSource(["a.jpg"] * 11, max_frames=10)


def test_video_larger_than_max_pixels_is_refused(clips_dir):
    with pytest.raises(FrameError, match="MEDIA_DECODE_MAX_PIXELS=307199, a guard against decompression bombs"):
        VideoFileSource(clips_dir / "cup.mp4", max_pixels=640 * 480 - 1)
    assert VideoFileSource(clips_dir / "cup.mp4", max_pixels=640 * 480).num_frames == 217


def test_decompression_bomb_image_is_a_frame_error_not_a_crash(tmp_path):
    # before: PIL's DecompressionBombError escaped as an unexpected exception (a 500)
    bomb = tmp_path / "bomb.png"
    Image.new("1", (15000, 15000)).save(bomb, optimize=True)  # 225 MP in a small file, over PIL's 2x limit
    assert bomb.stat().st_size < 2_000_000
    with pytest.raises(FrameError, match="too large"):
        ImageSequenceSource([bomb])
    with pytest.raises(FrameError, match="MEDIA_DECODE_MAX_PIXELS"):
        ImageSequenceSource([bomb], max_pixels=33_177_600)
    small = tmp_path / "small.png"
    Image.new("RGB", (100, 100)).save(small)
    with pytest.raises(FrameError, match="MEDIA_DECODE_MAX_PIXELS"):
        ImageSequenceSource([small], max_pixels=9_999)


def test_image_errors_do_not_reveal_server_paths(tmp_path):
    # before: "cannot identify image file '/tmp/.../00000.jpg'" reached the client
    bad = tmp_path / "secret-dir" / "00000.jpg"
    bad.parent.mkdir()
    bad.write_bytes(b"not an image at all")
    with pytest.raises(FrameError) as err:
        ImageSequenceSource([bad])
    assert "00000.jpg" in str(err.value) and str(tmp_path) not in str(err.value) and "secret-dir" not in str(err.value)
    truncated = tmp_path / "secret-dir" / "00001.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:60])
    with pytest.raises(FrameError) as err:
        ImageSequenceSource([truncated]).read(0)
    assert "secret-dir" not in str(err.value)


def test_reads_of_a_video_with_an_untrusted_header_are_the_right_frames(clips_dir):
    # before: box.mp4 (header 456, 455 decode) answered read(400) with frame 402: its seeks land 2 frames late
    path = clips_dir / "box.mp4"
    cap = cv2.VideoCapture(str(path))
    ref = []
    for _ in range(455):
        ok, bgr = cap.read()
        assert ok
        ref.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if len(ref) >= 380 else None)
    src = VideoFileSource(path, cache_frames=8, chunk=4)
    for i in (400, 399, 398, 441, 454, 390):
        assert np.array_equal(src.read(i), ref[i]), f"frame {i} differs"
