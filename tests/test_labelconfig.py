"""Label config detection: the two supported shapes, LS defaults, and a useful LabelConfigError for everything else."""
import dataclasses

import pytest

from backend.ls.errors import BadRequest, LabelConfigError
from backend.ls.labelconfig import (
    DEFAULT_FRAMERATE,
    FramesShape,
    VideoShape,
    normalize_framerate,
    parse_label_config,
    split_instance_label,
)

FRAMES = """<View>
  <Image name="frames" valueList="$frames" zoom="true"/>
  <BrushLabels name="mask" toName="frames" smart="true">
    <Label value="Car#1" background="#ff0000"/>
    <Label value="Car#2" background="#00ff00"/>
    <Label value="Person"/>
  </BrushLabels>
  <KeyPointLabels name="kp" toName="frames" smart="true" strokeWidth="2">
    <Label value="Car#1"/><Label value="Car#2"/>
  </KeyPointLabels>
  <RectangleLabels name="box" toName="frames" smart="true">
    <Label value="Person"/>
  </RectangleLabels>
</View>"""

VIDEO = """<View>
  <Labels name="videoLabels" toName="video" allowEmpty="true">
    <Label value="Car" background="#944BFF"/>
    <Label value="Person" background="#98C84E"/>
  </Labels>
  <Video name="video" value="$video" framerate="25.0"/>
  <VideoRectangle name="box" toName="video" smart="true"/>
</View>"""


def test_frames_shape_with_all_tools():
    shape = parse_label_config(FRAMES)
    assert shape == FramesShape(
        image_name="frames", data_key="frames", brush_name="mask", brush_labels=("Car#1", "Car#2", "Person"),
        keypoint_name="kp", keypoint_labels=("Car#1", "Car#2"), rect_name="box", rect_labels=("Person",),
    )
    assert shape.kind == "frames"
    assert shape.labels_of("kp") == ("Car#1", "Car#2")
    assert shape.labels_of("nope") is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        shape.brush_name = "x"


def test_frames_shape_brush_only_and_other_data_key():
    cfg = ('<View><Image name="img" valueList="$clip_frames"/>'
           '<BrushLabels name="b" toName="img"><Label value="A"/></BrushLabels></View>')
    shape = parse_label_config(cfg)
    assert (shape.image_name, shape.data_key, shape.brush_name) == ("img", "clip_frames", "b")
    assert shape.brush_labels == ("A",)
    assert shape.keypoint_name is None and shape.rect_name is None
    assert shape.keypoint_labels == () and shape.rect_labels == ()


def test_prompt_tools_on_another_image_are_ignored():
    cfg = """<View><Image name="img" valueList="$frames"/><Image name="other" value="$image"/>
      <BrushLabels name="b" toName="img"><Label value="A"/></BrushLabels>
      <KeyPointLabels name="kp" toName="other"><Label value="Z"/></KeyPointLabels></View>"""
    assert parse_label_config(cfg).keypoint_name is None


def test_label_alias_is_what_results_carry():
    cfg = ('<View><Image name="i" valueList="$f"/>'
           '<BrushLabels name="b" toName="i"><Label value="Car one" alias="Car#1"/></BrushLabels></View>')
    assert parse_label_config(cfg).brush_labels == ("Car#1",)


def test_video_shape_from_official_example():
    shape = parse_label_config(VIDEO)
    assert shape == VideoShape(
        video_name="video", data_key="video", framerate=25.0, rect_name="box", labels_name="videoLabels",
        labels=("Car", "Person"), framerate_key=None,
    )
    assert shape.kind == "video" and shape.fps({"video": "x"}) == 25.0


def test_video_framerate_default_is_the_editor_default():
    cfg = VIDEO.replace(' framerate="25.0"', "")
    assert DEFAULT_FRAMERATE == 24.0
    assert parse_label_config(cfg).framerate == 24.0
    assert parse_label_config(VIDEO.replace('"25.0"', '"0.04"')).framerate == 25.0  # < 1 means a frame duration
    assert parse_label_config(VIDEO.replace('"25.0"', '"abc"')).framerate == 24.0


def test_video_framerate_from_task_data():
    shape = parse_label_config(VIDEO.replace('"25.0"', '"$fps"'))
    assert shape.framerate_key == "fps" and shape.framerate == 24.0
    assert shape.fps({"fps": 30}) == 30.0
    assert shape.fps({"fps": "29.97"}) == 29.97
    assert shape.fps({"fps": 0.5}) == 2.0
    assert shape.fps({}) == 24.0


def test_normalize_framerate_rejects_negative():
    assert normalize_framerate("12") == 12.0 and normalize_framerate(0) == 24.0 and normalize_framerate(None) == 24.0
    with pytest.raises(LabelConfigError, match="must be positive"):
        normalize_framerate(-5)


def test_both_shapes_prefers_frames():
    cfg = FRAMES.replace("</View>", VIDEO.replace("<View>", "").replace("</View>", "") + "</View>")
    assert isinstance(parse_label_config(cfg), FramesShape)


@pytest.mark.parametrize("cfg, needle", [
    ("<View><Image name='a' value='$x'></View>", "not valid XML"),
    ("", "empty"),
    ('<View><Image name="img" value="$image"/>'
     '<BrushLabels name="b" toName="img"><Label value="A"/></BrushLabels></View>',
     "has no valueList"),
    ('<View><Video name="v" value="$video"/><BrushLabels name="b" toName="v"><Label value="A"/></BrushLabels></View>',
     "no brush on video"),
    ('<View><Video name="v" value="$video"/><VideoRectangle name="r" toName="v"/></View>',
     'has no <Labels toName="v">'),
    ('<View><Video name="v" value="$video"/><VideoRectangle name="r" toName="v"/><Labels name="l" toName="v"/></View>',
     "<Labels name=\"l\"> has no <Label> children"),
    ('<View><Text name="t" value="$text"/><Choices name="c" toName="t"><Choice value="a"/></Choices></View>',
     "no supported tag pair"),
    ('<View><Image name="i" valueList="$f"/><BrushLabels name="b" toName="i"/></View>', "has no <Label> children"),
    ('<View><Image name="i" valueList="frames"/>'
     '<BrushLabels name="b" toName="i"><Label value="A"/></BrushLabels></View>',
     'must name a task data field like "$frames"'),
    (FRAMES.replace("</View>", '<BrushLabels name="mask2" toName="frames"><Label value="B"/></BrushLabels></View>'),
     "keep only one"),
    (FRAMES.replace("</View>",
                    '<KeyPointLabels name="kp2" toName="frames"><Label value="Car#1"/></KeyPointLabels></View>'),
     "2 KeyPointLabels tags on 'frames' ('kp', 'kp2'); keep only one"),
    (FRAMES.replace('<Label value="Person"/>\n  </RectangleLabels>', '<Label value="Dog"/></RectangleLabels>'),
     "has labels ['Dog'] that <BrushLabels name=\"mask\"> lacks"),
    (VIDEO.replace("</View>", '<Labels name="more" toName="video"><Label value="X"/></Labels></View>'),
     "2 Labels tags on 'video'"),
])
def test_unsupported_configs_say_what_to_fix(cfg, needle):
    with pytest.raises(LabelConfigError) as ei:
        parse_label_config(cfg)
    assert needle in str(ei.value)
    assert isinstance(ei.value, BadRequest) and ei.value.status == 400


@pytest.mark.parametrize("label, expected", [
    ("Car#1", ("Car", "1")),
    ("Car#2", ("Car", "2")),
    ("Red car#front-left_2", ("Red car", "front-left_2")),
    ("a#b#3", ("a#b", "3")),
    ("Car", ("Car", None)),
    ("C#", ("C#", None)),
    ("#1", ("#1", None)),
    ("Car# 1", ("Car# 1", None)),
])
def test_split_instance_label(label, expected):
    assert split_instance_label(label) == expected
