"""Small numeric helpers that reproduce what sam2 does in torch, in numpy.

Each is tested against torch for exact (or last-ulp) agreement.
"""
from __future__ import annotations

import numpy as np

NO_OBJ_SCORE = -1024.0  # sam2's mask logit for "object absent"


def to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), rounding to nearest even like `tensor.to(torch.bfloat16)`."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return ((u + (((u >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)


def from_bf16(b: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32."""
    return (b.astype(np.uint32) << 16).view(np.float32)


def sine_pe_1d(positions: np.ndarray, dim: int, temperature: float = 10000.0) -> np.ndarray:
    """sam2's `get_1d_sine_pe`: positions [N] (float) -> [N, dim] = [sin(p / t_k) ..., cos(p / t_k) ...]."""
    pe_dim = dim // 2
    k = np.arange(pe_dim, dtype=np.float32)
    dim_t = np.power(np.float32(temperature), (np.float32(2) * (k // 2) / np.float32(pe_dim)).astype(np.float32))
    pos = np.asarray(positions, dtype=np.float32)[:, None] / dim_t.astype(np.float32)
    return np.concatenate([np.sin(pos), np.cos(pos)], axis=-1).astype(np.float32)


def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source indices and weights of torch's bilinear, align_corners=False, along one axis.

    torch evaluates `scale * (dst + 0.5) - 0.5` in float32 with a fused multiply-add (one
    rounding); float64 holds the float32 product exactly, so rounding once at the end matches.
    """
    scale = np.float32(in_size) / np.float32(out_size)
    dst = np.arange(out_size, dtype=np.float32) + np.float32(0.5)
    src = (dst.astype(np.float64) * np.float64(scale) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    i0 = src.astype(np.int64)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    return i0, i1, np.float32(1.0) - w1, w1


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize [..., h, w] float32 to [..., height, width] like `F.interpolate(mode="bilinear", align_corners=False)`.

    Columns are interpolated once per source row (h rows, not 2 x height), then rows are mixed: the same products
    and sums as interpolating each output row's two source rows, so the result is bit-identical to that, in about
    half the time for upscaling (13 masks 256 -> 480x640: 59 -> 33 ms on the 2-core dev machine).
    """
    h, w = x.shape[-2:]
    if (h, w) == (height, width):
        return x.astype(np.float32, copy=True)
    y0, y1, wy0, wy1 = _axis(h, height)
    x0, x1, wx0, wx1 = _axis(w, width)
    x = np.asarray(x, dtype=np.float32)
    cols = x[..., x0]
    cols *= wx0
    right = x[..., x1]
    right *= wx1
    cols += right
    out = cols[..., y0, :]
    out *= wy0[:, None]
    bottom = cols[..., y1, :]
    bottom *= wy1[:, None]
    out += bottom
    return out


def fill_holes(logits: np.ndarray, max_area: int) -> np.ndarray:
    """sam2's `fill_holes_in_mask_scores` for one mask of logits [h, w].

    Background regions (logit <= 0) of at most `max_area` pixels, 8-connected,
    become foreground with logit 0.1. sam2 runs this with a CUDA kernel (and
    skips it when the kernel is unavailable); OpenCV gives the same components.
    """
    if max_area <= 0:
        return logits
    import cv2

    background = (logits <= 0).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(background, connectivity=8)
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= max_area) + 1
    if small.size == 0:
        return logits
    out = logits.copy()
    out[np.isin(labels, small)] = 0.1
    return out


def non_overlapping(logits: np.ndarray) -> np.ndarray:
    """sam2's `_apply_non_overlapping_constraints` on [N, H, W] logits: where an object is not the highest-scoring
    one, its logit is clamped to at most -10 (so masks of different objects never overlap)."""
    if logits.shape[0] <= 1:
        return logits
    best = np.argmax(logits, axis=0)
    keep = best[None] == np.arange(logits.shape[0])[:, None, None]
    return np.where(keep, logits, np.minimum(logits, np.float32(-10.0))).astype(np.float32)
