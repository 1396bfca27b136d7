"""Two annotators on one task (found by the load suite): LS sends neither the user nor the annotation with an
interactive prompt, and the backend kept one set of objects per task, so annotator B's answers carried annotator
A's prompts and masks, B's click with A's label deleted A's prompts (LS sends every region of one label of B's
annotation; A's were "missing" from it), and MAX_OBJECTS counted both annotations' objects together.

Now each annotation is a scope of its own (found from the region ids: `ObjectBook`, `Ledger.scope_for`): answers
hold only the prompting annotation's objects, a click never deletes another annotation's prompts, MAX_OBJECTS and
MAX_POINTS count one annotation, and MAX_TASK_OBJECTS bounds the task. Every test here fails on the code before.
"""
from __future__ import annotations

import numpy as np
import pytest

from backend.ls.prompts import Ledger, ObjectBook, assign_object, parse_brush_region_id
from backend.ls.regions import KeypointRegion
from tests import appkit as kit
from tests.appkit import AUTH
from tests.servicekit import make_app, running


@pytest.fixture(scope="module")
def scoped(media, model_128_f32, tmp_path_factory):
    with running(make_app(media[0], model_128_f32, tmp_path_factory.mktemp("scopes"), MAX_OBJECTS=2,
                          MAX_TASK_OBJECTS=3, INTERACTIVE_WAIT_S=60)) as app:
        yield app


def _answer(client, task, ctx):
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, ctx, headers=AUTH)
    assert resp.status_code == 200, resp.get_data(as_text=True)[:300]
    return resp.get_json()["results"][0]["result"]


def _prompts(result) -> set[str]:
    return {r["id"] for r in result if r["type"] in ("keypointlabels", "rectanglelabels")}


def _objects(result) -> set[int]:
    return {parse_brush_region_id(r["id"])[0] for r in kit.brushes(result)}


@pytest.mark.parametrize("labels", [("Car", "Car"), ("Car", "Person")], ids=["same label", "different labels"])
def test_each_annotator_gets_only_their_own_objects_and_keeps_their_prompts(scoped, media, labels):
    size, client = media[1], scoped.test_client()
    task = kit.frames_task(950 + (labels[0] == labels[1]), "cup", 8)
    a = [kit.point("a1", 0, 20, 30, size, label=labels[0])]
    b = [kit.point("b1", 2, 80, 60, size, label=labels[1])]
    first_a = _answer(client, task, a)
    assert _prompts(first_a) == {"a1"} and _objects(first_a)
    first_b = _answer(client, task, b)
    assert _prompts(first_b) == {"b1"}, "annotator B was answered annotator A's prompts"
    assert not _objects(first_b) & _objects(first_a), "B got A's objects"
    tracker = scoped.config["SERVICE"]._entries[task["id"]].tracker
    a_obj, b_obj = tracker.ledger.entries["a1"].obj, tracker.ledger.entries["b1"].obj
    assert a_obj != b_obj and tracker.book.scope_of(a_obj) != tracker.book.scope_of(b_obj)
    again_a = _answer(client, task, a + [kit.point("a2", 4, 60, 20, size, label=labels[0])])
    assert _prompts(again_a) == {"a1", "a2"} and not _objects(again_a) & _objects(first_b)
    # the task's prediction (batch, no context) holds both annotations: B's click deleted none of A's prompts
    kit.wait_job(client, task["id"], headers=AUTH)
    whole = _answer(client, task, None)
    assert {"a1", "a2", "b1"} <= _prompts(whole), _prompts(whole)
    assert _objects(whole) == _objects(again_a) | _objects(first_b)


def test_max_objects_counts_one_annotation_and_max_task_objects_the_task(scoped, media):
    """MAX_OBJECTS=2, MAX_TASK_OBJECTS=3: A's 2 objects and B's first are fine (3 objects on the task, which was a
    400 naming MAX_OBJECTS before); B's second is past the task's cap; A's third is past MAX_OBJECTS. A refused
    prompt changes nothing."""
    size, client = media[1], scoped.test_client()
    task = kit.frames_task(960, "cup", 8)
    a = [kit.rect("ra1", 0, 5, 5, 20, 20, size), kit.rect("ra2", 1, 50, 50, 20, 20, size)]
    b = [kit.rect("rb1", 2, 30, 10, 20, 20, size, label="Person")]
    assert _prompts(_answer(client, task, a)) == {"ra1", "ra2"}  # a rectangle starts an object
    assert _prompts(_answer(client, task, b)) == {"rb1"}
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, b + [kit.rect("rb2", 3, 60, 5, 20, 20, size, label="Person")],
                       headers=AUTH)
    assert resp.status_code == 400 and "MAX_TASK_OBJECTS" in resp.get_json()["error"], resp.get_json()
    resp = kit.predict(client, task, kit.FRAMES_CONFIG, a + [kit.rect("ra3", 4, 70, 70, 20, 20, size)],
                       headers=AUTH)
    msg = resp.get_json()["error"]
    assert resp.status_code == 400 and "MAX_OBJECTS" in msg and "MAX_TASK_OBJECTS" not in msg, msg
    kit.wait_job(client, task["id"], headers=AUTH)
    assert _prompts(_answer(client, task, None)) == {"ra1", "ra2", "rb1"}


# ---- the pure rule -------------------------------------------------------------------------------------------------
def test_scope_for_knows_regions_merges_those_seen_together_and_starts_a_new_one_otherwise():
    book, ledger = ObjectBook(), Ledger()
    masks = lambda frame: {}  # noqa: E731
    pa = KeypointRegion(id="a1", label="Car", frame=0, x=5.0, y=5.0, positive=True)
    pb = KeypointRegion(id="b1", label="Person", frame=0, x=9.0, y=9.0, positive=True)
    sa = ledger.scope_for(["a1"], book)
    ledger.upsert([pa], book, masks, scope=sa)
    sb = ledger.scope_for(["b1"], book)
    ledger.upsert([pb], book, masks, scope=sb)
    assert sa != sb and ledger.scope_for(["a1", "new"], book) == sa
    assert ledger.scope_for(["sam2-2-7"], book, create=False) == sb  # our mask id names its object's scope
    assert ledger.scope_for(["nobody"], book, create=False) is None
    merged = ledger.scope_for(["a1", "b1"], book)  # one saved annotation holds both: one annotation
    assert merged == min(sa, sb) and book.scope_of(1) == book.scope_of(2) == merged


def test_a_positive_point_on_another_annotations_mask_starts_an_object_of_its_own():
    """The identity rule (a point inside a mask of its label joins that object) applies within one annotation."""
    book = ObjectBook()
    mine, theirs = book.new_scope(), book.new_scope()
    other = book.new("Car", scope=theirs)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    point = KeypointRegion(id="p", label="Car", frame=0, x=10.0, y=10.0, positive=True)
    assert assign_object(point, book, lambda f: {other: mask}, scope=theirs) == other
    new = assign_object(point, book, lambda f: {other: mask}, scope=mine)
    assert new != other and book.scope_of(new) == mine
