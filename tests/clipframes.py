"""The first frames of a shared clip as numbered JPEGs (00000.jpg...), the frame folder the engine tests read."""
from __future__ import annotations

from pathlib import Path


def dump_frames(clip: Path, folder: Path, n: int) -> Path:
    """Decode the first `n` frames of `clip` into `folder`; fails if the clip has fewer."""
    import cv2
    cap = cv2.VideoCapture(str(clip))
    try:
        for i in range(n):
            ok, bgr = cap.read()
            assert ok, f"{clip.name}: could not decode frame {i}"
            cv2.imwrite(str(folder / f"{i:05d}.jpg"), bgr)
    finally:
        cap.release()
    return folder
