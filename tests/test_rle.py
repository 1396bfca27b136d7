"""The vectorised RLE codec must match label_studio_sdk.converter.brush byte for byte, and masks must be alpha 255."""
import cv2
import numpy as np
import pytest
from label_studio_sdk.converter import brush

from backend.ls.rle import decode_rle, encode_rle, mask_to_rle, rle_to_mask


def _sdk(mask: np.ndarray) -> list[int]:
    return brush.mask2rle((np.asarray(mask) != 0).astype(np.uint8) * 255)


def _masks():
    rng = np.random.default_rng(1234)
    out = []
    for h, w in [(1, 1), (1, 7), (7, 1), (3, 5), (13, 17), (480, 640), (31, 1001)]:
        out.append(np.zeros((h, w), bool))
        out.append(np.ones((h, w), bool))
        out.append(rng.random((h, w)) < 0.5)  # noise: many short runs
        out.append(rng.random((h, w)) < 0.02)
    checker = (np.indices((37, 41)).sum(axis=0) % 2).astype(bool)
    stripes = np.zeros((64, 300), bool)
    stripes[:, ::3] = True
    corners = np.zeros((9, 11), bool)
    corners[0, 0] = corners[-1, -1] = True
    ellipse = np.zeros((480, 640), np.uint8)
    cv2.ellipse(ellipse, (320, 240), (160, 160), 20, 0, 360, 255, -1)
    big = np.zeros((300, 400), bool)  # one background run of > 65536 pixels (> 262144 bytes) then a long mask run
    big[250:, :] = True
    n = rng.random((60, 80)).astype(np.float32)
    blobby = cv2.resize(n, (640, 480), interpolation=cv2.INTER_CUBIC) > 0.55
    return out + [checker, stripes, corners, ellipse > 0, big, blobby]


@pytest.mark.parametrize("idx", range(len(_masks())))
def test_mask_to_rle_is_byte_identical_to_sdk(idx):
    mask = _masks()[idx]
    rle = mask_to_rle(mask)
    assert rle == _sdk(mask)
    assert all(type(v) is int and 0 <= v <= 255 for v in rle)


def test_many_random_shapes_match_sdk():
    rng = np.random.default_rng(7)
    for _ in range(60):
        h, w = int(rng.integers(1, 90)), int(rng.integers(1, 90))
        mask = rng.random((h, w)) < rng.random()
        assert mask_to_rle(mask) == _sdk(mask), (h, w)


@pytest.mark.parametrize("lengths", [
    [1, 2, 8, 9, 16, 17, 256, 257],
    [65535, 1, 65536, 2, 65537, 3],
    [131072, 131073, 200000, 1],
    [1] * 50,
])
def test_generic_encoder_matches_sdk_at_run_size_boundaries(lengths):
    values = np.resize(np.array([0, 255, 7, 128], np.uint8), len(lengths))
    arr = np.repeat(values, lengths)
    assert encode_rle(arr) == brush.encode_rle(arr)


def test_generic_decoder_matches_sdk_including_literal_tokens():
    rng = np.random.default_rng(3)
    for _ in range(40):
        n = int(rng.integers(1, 3000))
        arr = (rng.integers(0, 3, n) * int(rng.integers(1, 120))).astype(np.uint8)
        arr = np.repeat(arr, rng.integers(1, 40, n))
        rle = brush.encode_rle(arr)
        np.testing.assert_array_equal(decode_rle(rle), brush.decode_rle(rle))
        np.testing.assert_array_equal(decode_rle(rle), arr)


def test_alpha_and_every_channel_is_255_on_the_mask():
    mask = np.zeros((6, 10), bool)
    mask[2:5, 3:8] = True
    rgba = brush.decode_rle(mask_to_rle(mask)).reshape(6, 10, 4)
    assert set(np.unique(rgba)) == {0, 255}
    for c in range(4):
        np.testing.assert_array_equal(rgba[:, :, c], np.where(mask, 255, 0))


def test_uint8_zero_one_mask_is_encoded_as_255():
    mask = np.zeros((4, 5), np.uint8)
    mask[1, 1:4] = 1
    assert mask_to_rle(mask) == _sdk(mask) == brush.mask2rle(mask * 255)
    assert brush.decode_rle(mask_to_rle(mask)).reshape(4, 5, 4)[1, 2, 3] == 255


@pytest.mark.parametrize("idx", range(len(_masks())))
def test_round_trip_with_sdk_decoder_and_ours(idx):
    mask = _masks()[idx].astype(bool)
    h, w = mask.shape
    rle = mask_to_rle(mask)
    np.testing.assert_array_equal(brush.decode_rle(rle).reshape(h, w, 4)[:, :, 3] > 0, mask)
    out = rle_to_mask(rle, h, w)
    assert out.dtype == bool and out.shape == (h, w)
    np.testing.assert_array_equal(out, mask)


def test_rle_to_mask_checks_size_and_corruption():
    rle = mask_to_rle(np.ones((4, 5), bool))
    with pytest.raises(ValueError, match="holds 80 values but 160 were expected"):
        rle_to_mask(rle, 5, 4 * 2)  # 5 x 8 x 4 = 160 != 80
    with pytest.raises(ValueError, match="truncated or corrupt"):
        rle_to_mask(mask_to_rle(np.eye(40, dtype=bool))[:-6], 40, 40)
    with pytest.raises(ValueError, match="0-255"):
        rle_to_mask([0, 0, 1, 400, 0, 0, 0, 0], 4, 5)
    with pytest.raises(ValueError):
        rle_to_mask([], 4, 5)


def test_mask_must_be_2d():
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match="2-D"):
        mask_to_rle(np.ones((0, 3), bool))
