"""parse_regions on realistic LS JSON (shapes from the protocol reference): pixels, 0-based frames, clear 400s."""
import copy
import logging

import numpy as np
import pytest
from label_studio_sdk.converter import brush

from backend.ls.errors import BadRequest
from backend.ls.labelconfig import parse_label_config
from backend.ls.regions import (
    BrushRegion,
    KeypointRegion,
    RectRegion,
    VideoKeyframe,
    VideoRectRegion,
    parse_regions,
)

FRAMES = parse_label_config("""<View>
  <Image name="frames" valueList="$frames"/>
  <BrushLabels name="mask" toName="frames" smart="true"><Label value="Car"/><Label value="Car#2"/></BrushLabels>
  <KeyPointLabels name="kp" toName="frames" smart="true"><Label value="Car"/><Label value="Car#2"/></KeyPointLabels>
  <RectangleLabels name="box" toName="frames" smart="true"><Label value="Car"/></RectangleLabels>
  <Choices name="quality" toName="frames"><Choice value="ok"/></Choices>
</View>""")
VIDEO = parse_label_config("""<View>
  <Labels name="videoLabels" toName="video"><Label value="Car"/><Label value="Person"/></Labels>
  <Video name="video" value="$video" framerate="25.0"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>""")

KP = {"original_width": 320, "original_height": 240, "image_rotation": 0, "item_index": 1,
      "value": {"x": 25, "y": 37.5, "width": 0.6, "keypointlabels": ["Car"], "labels": ["Car"]},
      "is_positive": True, "id": "k1", "from_name": "kp", "to_name": "frames", "type": "keypointlabels",
      "origin": "manual"}
RECT = {"id": "r1", "from_name": "box", "to_name": "frames", "type": "rectanglelabels", "original_width": 320,
        "original_height": 240, "image_rotation": 0, "item_index": 0,
        "value": {"x": 6.25, "y": 25, "width": 18.75, "height": 25, "rotation": 0, "rectanglelabels": ["Car"]}}
VRECT = {"id": "Ab12Cd34", "from_name": "box", "to_name": "video", "type": "videorectangle", "origin": "manual",
         "value": {"framesCount": 50, "duration": 2, "labels": ["Car"],
                   "sequence": [{"frame": 1, "enabled": True, "rotation": 0, "x": 6.25, "y": 25, "width": 18.75,
                                 "height": 25, "time": 0.04}]}}


def _mask():
    m = np.zeros((240, 320), bool)
    m[60:120, 20:80] = True
    m[5, 300] = True
    return m


def _brush(mask=None, **over):
    mask = _mask() if mask is None else mask
    res = {"id": "m1", "from_name": "mask", "to_name": "frames", "type": "brushlabels", "origin": "manual",
           "original_width": mask.shape[1], "original_height": mask.shape[0], "image_rotation": 0, "item_index": 1,
           "value": {"format": "rle", "rle": brush.mask2rle(mask.astype(np.uint8) * 255), "brushlabels": ["Car"]}}
    res.update(over)
    return res


def _with(base, **value_over):
    res = copy.deepcopy(base)
    for k, v in value_over.items():
        if k.startswith("v_"):
            res["value"][k[2:]] = v
        else:
            res[k] = v
    return res


def test_keypoint_in_pixels_and_zero_based_frame():
    assert parse_regions([KP], FRAMES, num_frames=3) == [KeypointRegion("k1", 1, 80.0, 90.0, "Car", True)]


def test_keypoint_positive_flag():
    neg = _with(KP, is_positive=False)
    missing = _with(KP)
    del missing["is_positive"]
    out = parse_regions([neg, missing], FRAMES, num_frames=3)
    assert [r.positive for r in out] == [False, True]


def test_frame_size_scales_percent_instead_of_original_size():
    # LS percentages are resolution independent: the decoded frame size wins over original_width/height
    r = parse_regions([KP], FRAMES, num_frames=3, frame_size=(640, 480))[0]
    assert (r.x, r.y) == (160.0, 180.0)


def test_rectangle_to_xyxy_and_rotated_bounds_clipped():
    assert parse_regions([RECT], FRAMES, num_frames=3) == [RectRegion("r1", 0, (20.0, 60.0, 80.0, 120.0), "Car")]
    rot = _with(RECT, v_rotation=90)  # 60x60 px square at (20, 60) turned about its top-left: x in [-40, 20] -> clip
    box = parse_regions([rot], FRAMES, num_frames=3)[0].box_xyxy
    assert box == pytest.approx((0.0, 60.0, 20.0, 120.0), abs=1e-9)


def test_brush_mask_decoded_and_read_only():
    (r,) = parse_regions([_brush()], FRAMES, num_frames=3, frame_size=(320, 240))
    assert isinstance(r, BrushRegion) and (r.id, r.frame, r.label) == ("m1", 1, "Car")
    assert r.mask.dtype == bool and r.mask.shape == (240, 320)
    np.testing.assert_array_equal(r.mask, _mask())
    with pytest.raises(ValueError):
        r.mask[0, 0] = True


def test_last_frame_is_the_highest_item_index_accepted():
    assert parse_regions([_with(KP, item_index=199)], FRAMES, num_frames=200)[0].frame == 199
    with pytest.raises(BadRequest, match="item_index 1 but the task has 1 frames"):
        parse_regions([_with(KP, item_index=1)], FRAMES, num_frames=1)


def test_single_frame_task_without_item_index_is_frame_zero():
    kp = _with(KP)
    del kp["item_index"]
    assert parse_regions([kp], FRAMES, num_frames=1)[0].frame == 0


def test_mixed_list_skips_other_controls_and_relations(caplog):
    other = [
        {"id": "c1", "from_name": "quality", "to_name": "frames", "type": "choices", "value": {"choices": ["ok"]}},
        {"type": "relation", "from_id": "k1", "to_id": "r1", "direction": "right"},
        _with(KP, from_name="someone_else"),
        _with(KP, to_name="another_image"),
        _with(KP, type="rectanglelabels"),  # right control name, wrong type for it
        "not a dict",
    ]
    with caplog.at_level(logging.DEBUG, logger="backend.ls.regions"):
        out = parse_regions(other + [KP, RECT], FRAMES, num_frames=3)
    assert [r.id for r in out] == ["k1", "r1"]
    assert "skipping result id='c1'" in caplog.text


def test_video_rectangle_keyframes():
    (r,) = parse_regions([VRECT], VIDEO, num_frames=50, frame_size=(320, 240))
    assert r == VideoRectRegion("Ab12Cd34", "Car", (VideoKeyframe(0, (20.0, 60.0, 80.0, 120.0), True),), 50)


def test_video_labels_in_separate_labels_result():
    vr = copy.deepcopy(VRECT)
    del vr["value"]["labels"]
    lab = {"id": "Ab12Cd34", "from_name": "videoLabels", "to_name": "video", "type": "labels",
           "value": {"labels": ["Person"]}}
    (r,) = parse_regions([lab, vr], VIDEO, num_frames=50, frame_size=(320, 240))
    assert r.label == "Person"


def test_video_keyframes_sorted_and_box_at_follows_editor():
    seq = [
        {"frame": 21, "enabled": False, "x": 50, "y": 50, "width": 25, "height": 25},
        {"frame": 1, "enabled": True, "x": 0, "y": 0, "width": 25, "height": 25},
        {"frame": 31, "enabled": True, "x": 0, "y": 50, "width": 25, "height": 25},
    ]
    vr = _with(VRECT, v_sequence=seq)
    (r,) = parse_regions([vr], VIDEO, num_frames=50, frame_size=(400, 200))
    assert [k.frame for k in r.keyframes] == [0, 20, 30]
    assert r.box_at(0) == (0.0, 0.0, 100.0, 50.0)
    assert r.box_at(10) == (100.0, 50.0, 200.0, 100.0)  # halfway, interpolated towards the disabled keyframe
    assert r.box_at(20) == (200.0, 100.0, 300.0, 150.0)  # a disabled keyframe is shown on its own frame
    assert r.box_at(21) is None and r.box_at(29) is None  # ... and hidden until the next keyframe
    assert r.box_at(30) == (0.0, 100.0, 100.0, 150.0)
    assert r.box_at(49) == (0.0, 100.0, 100.0, 150.0)  # held after the last enabled keyframe
    late = VideoRectRegion("x", "Car", (VideoKeyframe(5, (1.0, 1.0, 2.0, 2.0), True),), None)
    assert late.box_at(4) is None


def test_video_needs_frame_size():
    with pytest.raises(ValueError, match="frame_size"):
        parse_regions([VRECT], VIDEO, num_frames=50)


@pytest.mark.parametrize("results, kwargs, needle", [
    ([_with(KP, item_index=250)], {"num_frames": 200},
     "keypoint region 'k1' has item_index 250 but the task has 200 frames (0-199)"),
    ([_with(KP, item_index=-1)], {"num_frames": 200}, "has item_index -1 but the task has 200 frames"),
    # one past the last frame (catches `<` -> `<=` in _item_frame), for every frame-indexed region type
    ([_with(KP, item_index=200)], {"num_frames": 200}, "has item_index 200 but the task has 200 frames (0-199)"),
    ([_with(RECT, item_index=3)], {"num_frames": 3}, "rectangle region 'r1' has item_index 3 but the task has 3 frames"),
    ([_brush(item_index=3)], {"num_frames": 3}, "brush region 'm1' has item_index 3 but the task has 3 frames (0-2)"),
    ([_with(KP, item_index=1.5)], {"num_frames": 200}, "it must be an integer frame index"),
    ([{k: v for k, v in KP.items() if k != "item_index"}], {"num_frames": 5},
     "keypoint region 'k1' has no item_index but the task has 5 frames"),
    ([_with(KP, v_keypointlabels=["Truck"])], {"num_frames": 3},
     "keypoint region 'k1' has label 'Truck', which is not in the config; use one of ['Car', 'Car#2']"),
    ([_with(RECT, v_rectanglelabels=["Car#2"])], {"num_frames": 3}, "label 'Car#2', which is not in the config"),
    ([_with(KP, v_keypointlabels=[], v_labels=[])], {"num_frames": 3}, "give each region exactly one of"),
    ([_with(KP, v_x=None)], {"num_frames": 3}, "keypoint region 'k1' value.x is None; send a finite number"),
    ([_with(KP, v_y="12")], {"num_frames": 3}, "value.y is '12'"),
    ([_with(KP, v_x=150)], {"num_frames": 3}, "outside the image"),
    ([_with(KP, is_positive="yes")], {"num_frames": 3}, "is_positive 'yes'"),
    ([_with(KP, value="x")], {"num_frames": 3}, "keypoint region 'k1' has value 'x'; send the LS result object"),
    ([_with(VRECT, value=None)], {"num_frames": 50, "frame_size": (320, 240)}, "has value None"),
    ([_brush(item_index=9)], {"num_frames": 3}, "brush region 'm1' has item_index 9 but the task has 3 frames (0-2)"),
    ([_with(KP, id=None)], {"num_frames": 3}, "has no id"),
    ([{k: v for k, v in KP.items() if k not in ("original_width", "original_height")}], {"num_frames": 3},
     "has no valid original_width/original_height"),
    ([_with(RECT, v_width=0)], {"num_frames": 3}, "positive size"),
    ([_with(RECT, v_x=120)], {"num_frames": 3}, "lies outside the image"),
    ([_brush()], {"num_frames": 3, "frame_size": (640, 480)},
     "brush region 'm1' is 320x240 (original_width x original_height) but the frames are 640x480"),
    ([_brush(original_width=100)], {"num_frames": 3}, "unreadable mask (RLE holds"),
    ([_with(_brush(), v_format="png")], {"num_frames": 3}, "no value.rle or value.maskDataURL"),
    ([_with(VRECT, v_sequence=[{**VRECT["value"]["sequence"][0], "frame": 51}])],
     {"num_frames": 50, "frame_size": (320, 240)},
     "videorectangle region 'Ab12Cd34' keyframe 0 is at frame 51 but the video has 50 frames (1-50)"),
    ([_with(VRECT, v_sequence=[{**VRECT["value"]["sequence"][0], "frame": 0}])],
     {"num_frames": 50, "frame_size": (320, 240)},
     "LS video frames are 1-based"),
    ([_with(VRECT, v_labels=["Dog"])], {"num_frames": 50, "frame_size": (320, 240)}, "label 'Dog'"),
    ([_with(VRECT, v_sequence=[])], {"num_frames": 50, "frame_size": (320, 240)}, "no value.sequence"),
    ([_with(VRECT, v_sequence=VRECT["value"]["sequence"] * 2)], {"num_frames": 50, "frame_size": (320, 240)},
     "two keyframes on one frame"),
])
def test_bad_regions_raise_bad_request_with_a_clear_sentence(results, kwargs, needle):
    shape = VIDEO if results[0].get("type") == "videorectangle" else FRAMES
    with pytest.raises(BadRequest) as ei:
        parse_regions(results, shape, **kwargs)
    assert needle in str(ei.value)
    assert ei.value.status == 400
