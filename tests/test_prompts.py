"""The object identity rule and the prompt ledger, with exact values (pure, no engine)."""
from __future__ import annotations

import numpy as np
import pytest

from backend.ls.errors import BadRequest
from backend.ls.prompts import (FramePrompt, Ledger, ObjectBook, assign_object, brush_region_id, changed_frames,
                                mask_differs, parse_brush_region_id)
from backend.ls.regions import BrushRegion, KeypointRegion, RectRegion, VideoKeyframe, VideoRectRegion


def _mask(x0, y0, x1, y1, shape=(20, 30)):
    m = np.zeros(shape, bool)
    m[y0:y1, x0:x1] = True
    return m


def test_region_ids_round_trip():
    assert brush_region_id(3, 17) == "sam2-3-17"
    assert parse_brush_region_id("sam2-3-17") == (3, 17)
    assert parse_brush_region_id("Ab12Cd34") is None and parse_brush_region_id("sam2-x-1") is None


def test_rectangles_start_objects_and_points_join_the_mask_they_touch():
    book = ObjectBook()
    masks = {}
    a = assign_object(RectRegion("r1", 0, (0, 0, 10, 10), "Car"), book, lambda f: masks)
    b = assign_object(RectRegion("r2", 0, (15, 0, 25, 10), "Car"), book, lambda f: masks)
    assert (a, b) == (1, 2)
    masks = {1: _mask(0, 0, 10, 10), 2: _mask(15, 0, 25, 10)}
    assert assign_object(KeypointRegion("k1", 0, 20.5, 5.5, "Car"), book, lambda f: masks) == 2
    assert assign_object(KeypointRegion("k2", 0, 5, 5, "Car", positive=False), book, lambda f: masks) == 1
    # a positive point outside every mask starts an object; a negative one goes to the nearest mask
    assert assign_object(KeypointRegion("k3", 0, 12, 18, "Car"), book, lambda f: masks) == 3
    assert assign_object(KeypointRegion("k4", 0, 24, 15, "Car", positive=False), book, lambda f: masks) == 2


def test_points_only_join_objects_of_their_label():
    book = ObjectBook()
    book.new("Person")
    masks = {1: _mask(0, 0, 10, 10)}
    assert assign_object(KeypointRegion("k", 0, 5, 5, "Car"), book, lambda f: masks) == 2


def test_negative_point_with_no_object_is_refused():
    with pytest.raises(BadRequest, match="negative point cannot start"):
        assign_object(KeypointRegion("k", 0, 5, 5, "Car", positive=False), ObjectBook(), lambda f: {})


def test_negative_point_goes_to_the_only_object_of_its_label_when_nothing_is_tracked_there():
    book = ObjectBook()
    book.new("Car")
    assert assign_object(KeypointRegion("k", 7, 5, 5, "Car", positive=False), book, lambda f: {}) == 1


def test_instance_labels_name_their_object():
    book = ObjectBook()
    a = assign_object(RectRegion("r1", 0, (0, 0, 5, 5), "Car#1"), book, lambda f: {})
    b = assign_object(KeypointRegion("k1", 4, 25, 15, "Car#2"), book, lambda f: {})
    c = assign_object(KeypointRegion("k2", 9, 25, 15, "Car#1"), book, lambda f: {1: _mask(0, 0, 1, 1)})
    assert (a, b, c) == (1, 2, 1)
    assert book.display(1) == "Car #1" and book.display(2) == "Car #2"


def test_brush_regions_ours_by_id_hand_drawn_by_overlap():
    book = ObjectBook()
    assert assign_object(BrushRegion("sam2-4-2", 2, _mask(0, 0, 3, 3), "Car"), book, lambda f: {}) == 4
    masks = {4: _mask(0, 0, 10, 10)}
    assert assign_object(BrushRegion("manual", 2, _mask(5, 5, 12, 12), "Car"), book, lambda f: masks) == 4
    assert assign_object(BrushRegion("far", 2, _mask(20, 15, 25, 18), "Car"), book, lambda f: masks) == 5


def test_video_rectangles_are_objects_by_region_id():
    book = ObjectBook()
    region = VideoRectRegion("vA", "Car", (VideoKeyframe(0, (0, 0, 5, 5), True),), 10)
    assert assign_object(region, book, lambda f: {}) == 1
    assert assign_object(region, book, lambda f: {}) == 1
    assert assign_object(VideoRectRegion("vB", "Car", region.keyframes, 10), book, lambda f: {}) == 2


def test_ledger_groups_prompts_keeps_ids_objects_and_masks_win():
    book, ledger = ObjectBook(), Ledger()
    none = lambda f: {}  # noqa: E731
    ledger.upsert([RectRegion("r", 0, (1, 2, 3, 4), "Car"), KeypointRegion("p", 0, 2, 3, "Car")], book,
                  lambda f: {1: _mask(0, 0, 5, 5)})
    assert ledger.prompts()[(1, 0)].points == ((2, 3, 1),) and ledger.prompts()[(1, 0)].box == (1, 2, 3, 4)
    # moving the point keeps its object even though it no longer touches the mask
    changed = ledger.upsert([KeypointRegion("p", 0, 29, 19, "Car")], book, none)
    assert changed == ["p"] and ledger.entries["p"].obj == 1
    assert ledger.upsert([KeypointRegion("p", 0, 29, 19, "Car")], book, none) == []
    ledger.upsert([BrushRegion("sam2-1-0", 0, _mask(0, 0, 2, 2), "Car")], book, none)
    assert ledger.prompts()[(1, 0)].mask is not None and ledger.prompts()[(1, 0)].points == ()
    # accepted output is not a prompt
    assert ledger.upsert([BrushRegion("sam2-1-5", 5, _mask(0, 0, 2, 2), "Car")], book, none,
                         is_correction=lambda r: False) == []


def test_remove_missing_and_video_keyframe_deletion():
    book, ledger = ObjectBook(), Ledger()
    ledger.upsert([KeypointRegion("a", 0, 1, 1, "Car"), KeypointRegion("b", 3, 1, 1, "Car")], book, lambda f: {})
    assert ledger.remove_missing([KeypointRegion("a", 0, 1, 1, "Car")], "keypointlabels", "Car") == ["b"]
    kf = (VideoKeyframe(0, (0, 0, 5, 5), True), VideoKeyframe(4, (1, 1, 6, 6), True), VideoKeyframe(6, (1, 1, 6, 6), False))
    ledger.upsert([VideoRectRegion("v", "Car", kf, 10)], book, lambda f: {})
    assert {rid for rid in ledger.entries if rid.startswith("v@")} == {"v@0", "v@4"}  # disabled keyframes prompt nothing
    assert ledger.remove_missing([VideoRectRegion("v", "Car", kf, 10)], "videorectangle", "Car") == []
    changed = ledger.upsert([VideoRectRegion("v", "Car", kf[:1], 10)], book, lambda f: {})
    assert changed == ["v@4"] and "v@4" not in ledger.entries


def test_changed_frames_sorted_by_frame():
    old = {(1, 0): FramePrompt(points=((1, 1, 1),)), (2, 5): FramePrompt(box=(0, 0, 1, 1))}
    new = {(1, 0): FramePrompt(points=((1, 1, 1),)), (2, 5): FramePrompt(box=(0, 0, 2, 2)),
           (1, 3): FramePrompt(mask=_mask(0, 0, 1, 1))}
    assert changed_frames(old, new) == [(1, 3), (2, 5)]
    assert changed_frames(new, {}) == [(1, 0), (1, 3), (2, 5)]


def test_mask_differs_tolerance():
    a = _mask(0, 0, 10, 10)
    b = a.copy()
    assert not mask_differs(a, b) and mask_differs(a, None) and mask_differs(a, _mask(0, 0, 10, 10, (21, 30)))
    b[0, 0] = False  # 1 pixel of 100 > 0.1 %
    assert mask_differs(a, b) and not mask_differs(a, b, tolerance=0.05)


def test_a_different_mask_on_the_same_frame_is_a_change():
    """A second correction on a frame that already holds one must reach the engine (FramePrompt.same_as compares
    the mask's pixels, not only whether there is one)."""
    first, second = _mask(0, 0, 10, 10), _mask(5, 5, 15, 15)
    assert FramePrompt(mask=first).same_as(FramePrompt(mask=first.copy()))
    assert not FramePrompt(mask=second).same_as(FramePrompt(mask=first))
    assert changed_frames({(1, 3): FramePrompt(mask=first)}, {(1, 3): FramePrompt(mask=second)}) == [(1, 3)]
    assert changed_frames({(1, 3): FramePrompt(mask=first)}, {(1, 3): FramePrompt(mask=first.copy())}) == []
    # and through the ledger: the same region id re-drawn on the same frame
    book, ledger = ObjectBook(), Ledger()
    ledger.upsert([BrushRegion("hand", 3, first, "Car")], book, lambda f: {})
    snapshot = ledger.prompts()
    assert ledger.upsert([BrushRegion("hand", 3, second, "Car")], book, lambda f: {}) == ["hand"]
    assert changed_frames(snapshot, ledger.prompts()) == [(1, 3)]


def test_mask_differs_is_relative_to_the_union_not_the_image():
    """A small object in a big frame: 5 changed pixels of a 100-pixel mask are a 5 % change, although they are only
    0.0005 % of the 1000x1000 image (measured against the image, every correction of a small object would vanish)."""
    a = _mask(100, 100, 110, 110, (1000, 1000))
    b = a.copy()
    b[100, 100:105] = False
    assert mask_differs(a, b) and mask_differs(b, a)
    c = a.copy()
    c[100, 100] = False  # 1 % of the union, still above the 0.1 % tolerance
    assert mask_differs(a, c)
    assert not mask_differs(a, c, tolerance=0.02)


def _replay(regions, reference: dict[int, dict[int, np.ndarray]], labels: dict[int, str]):
    """Upsert `regions` as a rebuild does: the book holds our earlier prediction's objects, masks_on gives its masks."""
    book, ledger = ObjectBook(), Ledger()
    for obj, label in labels.items():
        book.ensure(obj, label)
    ledger.upsert(regions, book, lambda f: reference.get(f, {}), replay=True)
    return {rid: e.obj for rid, e in ledger.entries.items()}, book


def test_rebuild_replays_prompts_before_corrections():
    """A saved annotation lists a hand-drawn correction before the points that made the objects: the points must
    reclaim objects 1 and 2 (in their order) first, and the correction, which overlaps neither, starts object 3.
    Without the prompts-first order the correction would take object 1 and shift every point by one."""
    hand = BrushRegion("hand", 5, _mask(20, 15, 25, 18), "Car")
    k1, k2 = KeypointRegion("k1", 0, 2, 2, "Car"), KeypointRegion("k2", 0, 27, 2, "Car")
    objs, book = _replay([hand, k1, k2], {}, {1: "Car", 2: "Car"})
    assert objs == {"k1": 1, "k2": 2, "hand": 3}
    assert sorted(book.labels) == [1, 2, 3]


def test_rebuild_rejoins_rectangles_by_box_iou_not_by_order():
    """Rectangles saved in another order than their objects were numbered rejoin the object whose earlier mask they
    frame (box IoU >= 0.5), not the first unclaimed one."""
    left, right = _mask(0, 0, 10, 10), _mask(18, 5, 28, 15)
    reference = {0: {1: left, 2: right}}
    r_right = RectRegion("r-right", 0, (18, 5, 28, 15), "Car")
    r_left = RectRegion("r-left", 0, (1, 0, 10, 10), "Car")
    objs, _ = _replay([r_right, r_left], reference, {1: "Car", 2: "Car"})
    assert objs == {"r-right": 2, "r-left": 1}
    # a rectangle that frames nothing of the earlier prediction takes the first unclaimed object of its label
    objs, _ = _replay([RectRegion("r-new", 0, (0, 14, 6, 20), "Car")], reference, {1: "Car", 2: "Car"})
    assert objs == {"r-new": 1}
