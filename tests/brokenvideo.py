"""Videos whose container declares more frames than decode, made with OpenCV alone in a test's tmp dir."""
from pathlib import Path

import cv2
import numpy as np


def _write(path: Path, fourcc: str, n: int, size=(64, 48)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25.0, size)
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    rng = np.random.default_rng(0)
    for i in range(n):
        frame = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        cv2.putText(frame, str(i), (2, 30), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def truncated_avi(path: Path, declared: int = 444, keep: float = 68 / 444) -> Path:
    """An MJPEG AVI of `declared` frames cut after about `keep` of its bytes: the header still says `declared`."""
    full = _write(path.with_name("full_" + path.name), "MJPG", declared)
    data = full.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def damaged_mp4(path: Path, frames: int = 100) -> Path:
    """An MPEG-4 part 2 MP4 whose second half of media data is zeroed: the index says `frames`, fewer decode."""
    _write(path, "mp4v", frames)
    data = bytearray(path.read_bytes())
    mdat, moov = data.find(b"mdat"), data.find(b"moov")
    assert 0 < mdat < moov, "expected the index (moov) after the media data"
    start = mdat + 8 + (moov - mdat) // 2
    data[start: moov - 100] = bytes(moov - 100 - start)
    path.write_bytes(bytes(data))
    return path


def decoded_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n
