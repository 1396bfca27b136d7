"""Frame sources (a video file or a list of image files) decoded on demand, and SAM 2 preprocessing.

Frames are 0-based indices; pixels are RGB uint8 [H, W, 3] at the video's own
resolution. Nothing holds the whole video in memory: a video file keeps one
decoder open and a small cache of recently decoded frames.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)


class FrameError(ValueError):
    """A frame index is out of range, or the media cannot be decoded."""


class FrameSource(Protocol):
    key: str          # identity of the pixels (path + size + mtime): a cache key
    num_frames: int
    width: int
    height: int

    def read(self, index: int) -> np.ndarray: ...  # RGB uint8 [H, W, 3]


def _file_key(paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = os.stat(p)
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:24]


def _scrub(message: object, path: Path) -> str:
    """An error text without the server path of `path` (PIL and OpenCV put full paths in their messages)."""
    text = str(message)
    for form in (str(path), os.path.abspath(path), str(path.parent)):
        text = text.replace(form, path.name if form != str(path.parent) else "")
    return text


def check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    """FrameError if a `width` x `height` frame is larger than `max_pixels` (decompression bombs, absurd sizes)."""
    if max_pixels is not None and width * height > max_pixels:
        raise FrameError(f"{what} is {width}x{height} = {width * height} pixels, more than the media decoder opens "
                         f"(MEDIA_DECODE_MAX_PIXELS={max_pixels}, a guard against decompression bombs); use smaller "
                         "frames or raise MEDIA_DECODE_MAX_PIXELS")


def check_index(index: int, num_frames: int) -> int:
    if not 0 <= index < num_frames:
        raise FrameError(f"frame {index} is out of range: the video has {num_frames} frames (0-{num_frames - 1})")
    return index


class ImageSequenceSource:
    """Frames stored as image files (e.g. the JPEGs of a Label Studio frames task), in list order.

    `max_pixels` caps width x height of every frame (checked from the header, before decoding), `max_frames` the
    number of files; both raise FrameError (the adapter answers 400).
    """

    def __init__(self, paths: Sequence[str | Path], *, max_pixels: int | None = None, max_frames: int | None = None):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise FrameError("the frame list is empty")
        if max_frames is not None and len(self.paths) > max_frames:
            raise FrameError(f"the task has {len(self.paths)} frames, more than the {max_frames} allowed "
                             f"(MEDIA_MAX_VIDEO_FRAMES)")
        self.max_pixels = max_pixels
        self.num_frames = len(self.paths)
        self.width, self.height = self._open(0).size
        self.key = "img:" + _file_key(self.paths)

    def _open(self, index: int) -> Image.Image:
        path = self.paths[index]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                img = Image.open(path)  # reads the header only
                check_pixels(img.size[0], img.size[1], self.max_pixels, f"frame {index} ({path.name})")
                img.load()
        except FrameError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise FrameError(f"frame {index} ({path.name}) is too large to decode safely ({_scrub(e, path)}); use "
                             "frames within MEDIA_DECODE_MAX_PIXELS (the decoder's guard against decompression "
                             "bombs)") from None
        except MemoryError:
            raise FrameError(f"frame {index} ({path.name}) is too large to decode") from None
        except Exception as e:  # noqa: BLE001 - PIL raises OSError, ValueError, SyntaxError, EOFError... on bad files
            raise FrameError(f"frame {index} ({path.name}) is not a readable image: {_scrub(e, path)}") from None
        return img

    def read(self, index: int) -> np.ndarray:
        img = self._open(check_index(index, self.num_frames))
        if img.size != (self.width, self.height):
            raise FrameError(f"frame {index} is {img.size[0]}x{img.size[1]} but frame 0 is {self.width}x{self.height}; "
                             f"all frames of a task must have one size")
        return np.asarray(img.convert("RGB"))


class VideoFileSource:
    """A video file decoded with OpenCV.

    The frame count is the number of decodable frames, found cheaply (`count_frames`): the container's count when
    its last frame decodes and the one after it does not, else by decoding (bounded by `max_frames`), cached per
    file. Sequential reads cost one decode each, and a backward or far jump re-seeks and decodes a chunk forward
    into a small LRU so reverse propagation stays cheap. The LRU of decoded frames is capped in bytes
    (`cache_bytes`, default 256 MB: 32 frames of 1080p, 10 of 4K); a chunk never holds more frames than fit.
    """

    def __init__(self, path: str | Path, *, cache_bytes: int = 256 << 20, chunk: int = 16,
                 cache_frames: int | None = None, max_pixels: int | None = None, max_frames: int | None = None):
        import cv2

        self._cv2 = cv2
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_bytes = int(cache_bytes)
        self.cached_bytes = 0
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise FrameError(f"{self.path.name} cannot be opened as a video (corrupt or unsupported format)")
        self.fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.width <= 0 or self.height <= 0:
            raise FrameError(f"{self.path.name} has no decodable frames (corrupt or unsupported video)")
        check_pixels(self.width, self.height, max_pixels, self.path.name)
        self.key = "vid:" + _file_key([self.path])
        n, self._seek_trusted = _count(self._cap, self.path, key=self.key, max_frames=max_frames)
        if n == 0:
            raise FrameError(f"{self.path.name} has no decodable frames (corrupt or unsupported video)")
        self.num_frames = n
        self._cap.release()  # counting moved the decoder; start again from frame 0
        self._cap = cv2.VideoCapture(str(self.path))
        self._pos = 0  # decoder position (next frame it would return)
        frame_bytes = self.width * self.height * 3
        if cache_frames is not None:  # older callers: a cap in frames becomes that many frames' bytes
            self._cache_bytes = max(cache_frames, chunk) * frame_bytes
        self._chunk = max(1, min(chunk, self._cache_bytes // frame_bytes))  # a chunk must fit in the cache

    def _seek(self, index: int) -> None:
        cv2 = self._cv2
        if self._seek_trusted:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._pos = int(self._cap.get(cv2.CAP_PROP_POS_FRAMES))
        if not self._seek_trusted or self._pos != index:  # imprecise seek: restart and walk forward
            self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path))
            self._pos = 0
            while self._pos < index and self._cap.grab():
                self._pos += 1

    def _decode_next(self) -> np.ndarray:
        ok, bgr = self._cap.read()
        if not ok:
            raise FrameError(f"{self.path.name}: decoding frame {self._pos} failed")
        self._pos += 1
        return self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB)

    def _remember(self, index: int, rgb: np.ndarray) -> None:
        old = self._cache.pop(index, None)
        if old is not None:
            self.cached_bytes -= old.nbytes
        self._cache[index] = rgb
        self.cached_bytes += rgb.nbytes
        while self.cached_bytes > self._cache_bytes and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self.cached_bytes -= dropped.nbytes

    def read(self, index: int) -> np.ndarray:
        check_index(index, self.num_frames)
        with self._lock:
            if index in self._cache:
                self._cache.move_to_end(index)
                return self._cache[index]
            if not (self._pos <= index < self._pos + self._chunk):
                # backward or far jump: decode a chunk ending at `index` so the next frames back are cached too
                self._seek(max(0, index - self._chunk + 1) if index < self._pos else index)
            frame = None
            while self._pos <= index:
                i = self._pos
                frame = self._decode_next()
                self._remember(i, frame)
            return frame

    def close(self) -> None:
        with self._lock:
            self._cap.release()
            self._cache.clear()
            self.cached_bytes = 0


_COUNTS: OrderedDict[str, tuple[int, bool]] = OrderedDict()  # file key -> (frames, trusted), LRU last
_COUNTS_LOCK = threading.Lock()
_COUNTS_MAX = 1024


def count_frames(cap, path: Path, *, key: str | None = None, max_frames: int | None = None) -> int:
    """Decodable frames of the video open in `cap`; see `_count`."""
    return _count(cap, path, key=key, max_frames=max_frames)[0]


def _count(cap, path: Path, *, key: str | None = None, max_frames: int | None = None) -> tuple[int, bool]:
    """Decodable frames of the video open in `cap` (OpenCV), without decoding them all when the container is right.

    Trusted container count N: seeking to frame N-1 lands there, it decodes, and nothing decodes after it (a few
    decodes from the nearest keyframe). Otherwise (box.mp4 declares 456 and decodes 455; a truncated AVI declares
    444 and decodes 60) every frame is grabbed once, at most `max_frames` + 1 (more raises FrameError). Results are
    cached by `key` (path, size and mtime), so a video is counted once per process. Moves `cap`'s position.
    Returns (count, whether the container count was trusted); when it was not, seeks are not trusted either (on
    box.mp4 a seek past frame ~390 lands 2 frames late), so the reader walks forward from frame 0 instead.
    """
    import cv2

    if key is not None:
        with _COUNTS_LOCK:
            if key in _COUNTS:
                _COUNTS.move_to_end(key)
                return _COUNTS[key]
    trusted = False
    declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    n = None
    if declared > 0:
        cap.set(cv2.CAP_PROP_POS_FRAMES, declared - 1)
        if int(cap.get(cv2.CAP_PROP_POS_FRAMES)) == declared - 1 and cap.grab() and not cap.grab():
            n, trusted = declared, True
            if max_frames is not None and n > max_frames:
                raise FrameError(f"{path.name} has {n} frames, more than {max_frames} (MEDIA_MAX_VIDEO_FRAMES); cut "
                                 "the video or raise the limit")
    if n is None:
        cap.release()  # back to frame 0 without trusting a seek
        cap.open(str(path))
        n = 0
        while cap.grab():
            n += 1
            if max_frames is not None and n > max_frames:
                raise FrameError(f"{path.name} has more than {max_frames} frames (MEDIA_MAX_VIDEO_FRAMES); cut the "
                                 "video or raise the limit")
        if declared and n != declared:
            log.warning("%s: the container declares %d frames but %d decode; using %d", path.name, declared, n, n)
    if key is not None:
        with _COUNTS_LOCK:
            _COUNTS[key] = (n, trusted)
            while len(_COUNTS) > _COUNTS_MAX:
                _COUNTS.popitem(last=False)
    return n, trusted


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def frame_order(names: Sequence[str]) -> list[str]:
    """File names of a frame folder in frame order: by integer stem (0, 1, 2, 10), as sam2 orders a
    folder of frames; when some stem is not an integer, by name with digit runs compared as numbers."""
    import re

    stems = [Path(n).stem for n in names]
    if all(s.isdigit() for s in stems):
        return [n for _, n in sorted(zip((int(s) for s in stems), names))]
    def natural(n: str):
        return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", n)]
    return sorted(names, key=natural)


def open_source(path_or_paths: str | Path | Sequence[str | Path], *, cache_bytes: int = 256 << 20) -> FrameSource:
    """A video file path, a folder of images (ordered by `frame_order`) or a list of image paths (in list order).

    cache_bytes caps a video file's decoded-frame cache."""
    if isinstance(path_or_paths, (str, Path)):
        p = Path(path_or_paths)
        if p.is_dir():
            names = frame_order([f.name for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES])
            return ImageSequenceSource([p / n for n in names])
        if not p.is_file():
            raise FrameError(f"{p.name} does not exist")
        return VideoFileSource(p, cache_bytes=cache_bytes)
    return ImageSequenceSource(list(path_or_paths))


def preprocess(rgb: np.ndarray, image_size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """RGB uint8 [H,W,3] -> model input [1,3,S,S] float32, exactly as sam2 loads video frames.

    sam2 resizes with PIL (bicubic) to S x S ignoring aspect ratio, divides by
    255 in float64, stores float32, then subtracts the ImageNet mean and
    divides by the std in float32.
    """
    resized = np.asarray(Image.fromarray(rgb).resize((image_size, image_size)))
    x = (resized / 255.0).astype(np.float32).transpose(2, 0, 1)
    x -= np.asarray(mean, np.float32)[:, None, None]
    x /= np.asarray(std, np.float32)[:, None, None]
    return x[None]
