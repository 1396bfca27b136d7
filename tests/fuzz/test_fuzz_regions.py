"""LS result parsing (`backend.ls.regions.parse_regions`) under any JSON: a list of typed regions or a BadRequest
(400) naming the problem, never another exception, never an allocation beyond the frame size; with skip_bad (a saved
annotation being replayed) bad regions are dropped instead."""
from __future__ import annotations

import copy
import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from backend.ls.errors import BadRequest
from backend.ls.labelconfig import parse_label_config
from backend.ls.regions import BrushRegion, KeypointRegion, RectRegion, VideoRectRegion, parse_regions
from backend.ls.rle import mask_to_rle
from tests import appkit as kit

import numpy as np

FRAMES = parse_label_config(kit.FRAMES_CONFIG)
VIDEO = parse_label_config(kit.VIDEO_CONFIG)
SIZE = (32, 24)  # frame width, height
N = 5

_m = np.zeros((SIZE[1], SIZE[0]), bool)
_m[4:10, 5:20] = True
VALID = [kit.rect("r", 1, 10, 10, 30, 40, SIZE), kit.point("k", 2, 50, 50, SIZE), kit.brush("b", 3, _m),
         {"id": "v", "from_name": "box", "to_name": "video", "type": "videorectangle",
          "value": {"labels": ["Car"], "sequence": [{"frame": 2, "x": 5, "y": 5, "width": 20, "height": 20,
                                                     "enabled": True, "rotation": 0}]}}]

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.text(max_size=12),
                      st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([0, 1, -1, N, N - 1, 100, 100.0, 1e308, "Car", "Person", "Dog", "rle", "png"]))
json_value = st.recursive(json_leaf, lambda inner: st.one_of(st.lists(inner, max_size=5),
                                                             st.dictionaries(st.text(max_size=8), inner, max_size=5)),
                          max_leaves=20)
KEYS = ["id", "type", "from_name", "to_name", "item_index", "original_width", "original_height", "is_positive",
        "value", "value.x", "value.y", "value.width", "value.height", "value.rotation", "value.rle", "value.format",
        "value.rectanglelabels", "value.keypointlabels", "value.brushlabels", "value.labels", "value.sequence",
        "value.framesCount"]


@st.composite
def mutated(draw):
    """A valid result with a few fields replaced by arbitrary JSON (or removed)."""
    res = copy.deepcopy(draw(st.sampled_from(VALID)))
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)):
        target, name = (res.setdefault("value", {}), key[6:]) if key.startswith("value.") else (res, key)
        if not isinstance(target, dict):
            continue
        if draw(st.booleans()):
            target[name] = draw(json_value)
        else:
            target.pop(name, None)
    return res


@st.composite
def huge_brush(draw):
    """A brush result that declares a huge canvas (the 5 GB allocation of the audit) with a matching RLE header."""
    w, h = draw(st.sampled_from([(32768, 32767), (100000, 100000), (SIZE[0] * 2, SIZE[1])]))
    res = kit.brush("big", 1, _m)
    res.update(original_width=w, original_height=h)
    res["value"]["rle"] = mask_to_rle(np.zeros((1, 1), bool))[:0] + [0xFF] * 64
    return res


results = st.lists(st.one_of(mutated(), json_value, huge_brush(), st.sampled_from(VALID)), max_size=6)


def _parse(res, shape, skip_bad=False):
    tracemalloc.start()
    try:
        try:
            out = parse_regions(res, shape, num_frames=N, frame_size=SIZE, **({"skip_bad": True} if skip_bad else {}))
        except BadRequest as e:
            assert e.status == 400 and str(e) and "Traceback" not in str(e)
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _check(out, peak):
    assert peak < 8 << 20, f"parsing traced {peak} bytes"
    if isinstance(out, list):
        for r in out:
            assert isinstance(r, (KeypointRegion, RectRegion, BrushRegion, VideoRectRegion))
            if isinstance(r, VideoRectRegion):
                assert all(0 <= k.frame < N for k in r.keyframes)
                continue
            assert 0 <= r.frame < N
            if isinstance(r, BrushRegion):
                assert r.mask.shape == (SIZE[1], SIZE[0])
            if isinstance(r, KeypointRegion):
                assert 0 <= r.x <= SIZE[0] and 0 <= r.y <= SIZE[1]
            if isinstance(r, RectRegion):
                x0, y0, x1, y1 = r.box_xyxy
                assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1]


@given(res=st.one_of(results, json_value))
def test_frames_results_parse_or_400(res):
    _check(*_parse(res, FRAMES))


@given(res=st.one_of(results, json_value))
def test_video_results_parse_or_400(res):
    _check(*_parse(res, VIDEO))


@given(res=results)
def test_replaying_a_saved_annotation_skips_bad_regions_instead_of_failing(res):
    out, peak = _parse(res, FRAMES, skip_bad=True)
    _check(out, peak)
    assert isinstance(out, list), f"skip_bad still raised: {out}"
