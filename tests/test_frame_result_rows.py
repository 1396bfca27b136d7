"""FrameResult rows are resized only when asked for, bit-identical to resizing them together, and name their source
(the output's serial): a click on one object leaves the other objects' sources on that frame unchanged, and the LS
tracker then records (and resizes) only the clicked object's mask."""
from __future__ import annotations

import numpy as np
import pytest

from backend.engine import open_source
from backend.engine import session as session_module
from backend.engine.numerics import resize_bilinear
from backend.engine.session import FrameResult
from tests import appkit as kit
from tests.appkit import AUTH, N
from tests.test_engine_behaviour import box, frames, make_engine  # noqa: F401  (frames is a fixture)


def test_lazy_rows_are_bit_identical_to_the_batch_resize():
    low = (np.random.default_rng(0).standard_normal((3, 32, 32)) * 8).astype(np.float32)
    lazy = FrameResult(4, ["a", "b", "c"], low_res=low, size=(48, 64), sources=[7, 8, None])
    assert np.array_equal(lazy.row(1), resize_bilinear(low, 48, 64)[1])
    assert np.array_equal(lazy.logits, resize_bilinear(low, 48, 64))
    masks = lazy.masks()
    assert list(masks) == ["a", "b", "c"] and all(np.array_equal(masks[k], lazy.logits[i] > 0)
                                                   for i, k in enumerate("abc"))
    with pytest.raises(ValueError, match="logits, or low_res with size"):
        FrameResult(0, [], None)


def test_a_click_keeps_the_other_objects_sources_on_its_frame(model_256_f32, frames):  # noqa: F811
    eng = make_engine(model_256_f32)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    eng.add_points(ses, 0, "b", box=box(ses, (0.1, 0.1, 0.3, 0.3)))
    tracked = {r.frame: r for r in eng.propagate(ses)}
    k = 5
    before = tracked[k]
    assert None not in before.sources and len(set(before.sources)) == 2
    after = eng.add_points(ses, k, "a", points=[(0.5 * ses.width, 0.5 * ses.height)], labels=[1])
    i_a, i_b = after.object_ids.index("a"), after.object_ids.index("b")
    assert after.sources[i_b] == before.sources[i_b]  # b's output on frame k is the one propagation made
    assert after.sources[i_a] != before.sources[i_a]
    assert np.array_equal(after.row(i_b), before.row(i_b))


def test_the_ls_tracker_resizes_only_the_clicked_object(app, client, media, monkeypatch):
    """Three objects tracked on every frame; a point for one of them on a tracked frame re-records that object alone,
    on that frame and on every frame re-tracked for it (one resized row each, where all three were resized before),
    and the answer still holds every object's mask there, unchanged for the others."""
    _, size = media
    tid = 151
    task = kit.frames_task(tid, "cup", N)
    rects = [kit.point("p1", 0, 20, 25, size, label="Car#1"), kit.point("p2", 0, 60, 40, size, label="Person"),
             kit.point("p3", 0, 35, 75, size, label="Car#2")]
    answer = kit.predict(client, task, kit.FRAMES_CONFIG, rects, headers=AUTH)
    assert answer.status_code == 200, answer.get_json()
    kit.wait_job(client, tid, headers=AUTH)
    k = 6
    tracked = kit.masks_of(kit.predict(client, task, kit.FRAMES_CONFIG, None, headers=AUTH).get_json()
                           ["results"][0]["result"])
    on_k = {rid: m for (rid, f), m in tracked.items() if f == k}
    assert len(on_k) == 3
    resized = []
    real = session_module.resize_bilinear
    monkeypatch.setattr(session_module, "resize_bilinear", lambda *a: resized.append(a) or real(*a))
    asked = []
    row = FrameResult.row
    monkeypatch.setattr(FrameResult, "row", lambda self, i: asked.append((self.frame, self.object_ids[i])) or
                        row(self, i))
    point = kit.point("p4", k, 38, 70, size, label="Car#2")  # an instance label: always the same object
    clicked = kit.predict(client, task, kit.FRAMES_CONFIG, rects + [point], headers=AUTH)  # waits for re-tracking
    assert clicked.status_code == 200, clicked.get_json()
    clicked_obj = app.config["SERVICE"].sessions.peek(tid).tracker.book.of_label("Car#2")
    # the click's frame and every frame re-tracked for that object: its row alone, resized once
    assert {obj for _, obj in asked} == set(clicked_obj) and len(clicked_obj) == 1
    frames_done = {f for f, _ in asked}
    assert k in frames_done and len(asked) == len(frames_done) == len(resized)
    now = {rid: m for (rid, f), m in kit.masks_of(clicked.get_json()["results"][0]["result"]).items() if f == k}
    assert now.keys() == on_k.keys()
    changed = [rid for rid in on_k if not np.array_equal(now[rid], on_k[rid])]
    assert len(changed) <= 1
