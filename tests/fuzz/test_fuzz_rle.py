"""Any RLE and any declared size: `rle_to_mask` returns an HxW bool mask or raises ValueError (never another error),
never allocates more than the frame it is checked against, and encodes/decodes real masks losslessly."""
from __future__ import annotations

import tracemalloc

import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from backend.ls.rle import decode_rle, mask_to_rle, rle_to_mask

SIZES = st.integers(min_value=-3, max_value=80)
HUGE = st.sampled_from([32768, 32767, 1 << 20, 1 << 31, 10**12])


def _header(num: int) -> list[int]:
    """A valid LS RLE header (value count, 8-bit words, run widths 3/4/8/16) as bytes, 53 bits padded to 56."""
    bits = f"{num % (1 << 32):032b}" + f"{7:05b}" + "".join(f"{s - 1:04b}" for s in (3, 4, 8, 16)) + "000"
    return [int(bits[i:i + 8], 2) for i in range(0, 56, 8)]


rle_bytes = st.one_of(
    st.lists(st.integers(0, 255), max_size=200),  # noise
    st.lists(st.integers(-300, 600), min_size=7, max_size=40),  # out-of-range values
    st.builds(lambda num, body: _header(num) + body,  # a valid header over a noisy body
              st.integers(0, 1 << 32), st.lists(st.integers(0, 255), max_size=200)),
)


def _peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        try:
            out = fn()
        except ValueError as e:
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@given(rle=rle_bytes, h=SIZES, w=SIZES)
@example(rle=_header(4 * 5 * 5) + [0b11111111] * 30, h=5, w=5)
def test_any_rle_is_a_mask_or_a_value_error_within_the_frame_budget(rle, h, w):
    out, peak = _peak(lambda: rle_to_mask(rle, h, w))
    if isinstance(out, np.ndarray):
        assert out.shape == (h, w) and out.dtype == bool
    # nothing bigger than a few copies of the declared HxW RGBA image (plus the bit string of the input)
    assert peak <= 16 * 4 * max(h, 1) * max(w, 1) + 64 * len(rle) + (1 << 20), peak


@given(rle=rle_bytes, h=st.one_of(SIZES, HUGE), w=st.one_of(SIZES, HUGE))
@example(rle=_header(4 * 32767 * 32768) + [0xFF] * 64, h=32767, w=32768)  # the 1 MB RLE asking for ~5 GB
def test_a_declared_size_other_than_the_frame_is_refused_before_decoding(rle, h, w):
    frame = (16, 12)
    out, peak = _peak(lambda: rle_to_mask(rle, h, w, frame_size=frame))
    if isinstance(out, np.ndarray):
        assert (w, h) == frame and out.shape == (12, 16)
    assert peak <= (2 << 20) + 64 * len(rle), f"{peak} bytes traced for a {h}x{w} declaration"


@given(rle=rle_bytes)
def test_decode_without_a_size_stays_within_the_global_cap(rle):
    out, peak = _peak(lambda: decode_rle(rle))
    if isinstance(out, np.ndarray):
        assert out.dtype == np.uint8 and out.ndim == 1
    assert peak <= (1 << 20) + 64 * len(rle) + (out.nbytes * 4 if isinstance(out, np.ndarray) else 0)


@given(mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
def test_masks_round_trip_exactly(mask):
    h, w = mask.shape
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), h, w), mask)
    assert np.array_equal(rle_to_mask(mask_to_rle(mask), h, w, frame_size=(w, h)), mask)
