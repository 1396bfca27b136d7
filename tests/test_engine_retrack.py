"""Re-track only what changed (issue 10, item 1) and clicks that skip memory attention (item 2).

Memory-attention runs are counted per object (`session.attention_calls`); untouched objects must keep their
results and memories bit for bit.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from backend.engine import EngineSettings, VideoPredictor, open_source
from backend.engine.retrack import PassPlan

N = 16
A_BOX = (0.3, 0.3, 0.6, 0.7)
B_BOX = (0.05, 0.1, 0.4, 0.5)


@pytest.fixture(scope="module")
def frames(clips_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("cup16")
    cap = cv2.VideoCapture(str(clips_dir / "cup.mp4"))
    for i in range(N):
        ok, bgr = cap.read()
        assert ok
        cv2.imwrite(str(d / f"{i:05d}.jpg"), bgr)
    return d


@pytest.fixture(scope="module")
def eng(model_128_f32):
    return VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32"))


def box(ses, frac):
    return (frac[0] * ses.width, frac[1] * ses.height, frac[2] * ses.width, frac[3] * ses.height)


def settle(eng, ses) -> dict[int, np.ndarray]:
    """Run what the engine says is pending; frame -> logits of every object."""
    out = {}
    for p in eng.pending_passes(ses):
        for r in eng.propagate(ses, start=p.start, reverse=p.reverse, objects=p.objects):
            out[r.frame] = r.logits
    return out


def snapshot(ses, obj):
    """Everything tracking keeps of one object: per frame (serial, logits, memory, pointer, direction)."""
    t = ses.objects.get(obj)
    out = {}
    for d in (t.cond, t.non_cond):
        for f, o in d.items():
            assert ses.store.ensure(t.uid, f, o)
            out[f] = (o.serial, o.pred_logits.copy(), None if o.maskmem is None else o.maskmem.copy(),
                      o.obj_ptr.copy(), t.tracked.get(f))
    return out


def assert_same(a, b):
    assert a.keys() == b.keys()
    for f in a:
        assert a[f][0] == b[f][0] and a[f][4] == b[f][4], f"frame {f}: output replaced"
        for x, y in zip(a[f][1:4], b[f][1:4]):
            assert (x is None and y is None) or np.array_equal(x, y), f"frame {f} changed"


def test_correction_of_one_object_retracks_it_alone(eng, frames):
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses, A_BOX))
    eng.add_points(ses, 0, "b", box=box(ses, B_BOX))
    assert eng.pending_passes(ses) == [PassPlan(0, False, ("a", "b"))]
    first = settle(eng, ses)
    assert sorted(first) == list(range(N)) and eng.pending_passes(ses) == []
    assert ses.attention_calls == {"a": N - 1, "b": N - 1}
    b_before = snapshot(ses, "b")

    k = 6
    eng.add_points(ses, k, "a", points=[[0.45 * ses.width, 0.5 * ses.height]], labels=[0])
    assert eng.pending_passes(ses) == [PassPlan(k, False, ("a",))]  # forward from k, object a only
    second = settle(eng, ses)
    assert sorted(second) == list(range(k, N))
    assert ses.attention_calls == {"a": N - 1 + N - k - 1, "b": N - 1}  # b's memory attention never ran
    assert_same(snapshot(ses, "b"), b_before)
    for f in range(N):
        assert np.array_equal(eng.frame_result(ses, f).logits[1], first[f][1]), f"b changed on frame {f}"
    for f in range(k):
        assert np.array_equal(eng.frame_result(ses, f).logits[0], first[f][0]), f"a changed before k on {f}"
    assert any(not np.array_equal(second[f][0], first[f][0]) for f in range(k + 1, N)), "the correction had no effect"


def test_new_object_after_propagation_tracks_only_it_both_ways(eng, frames):
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses, A_BOX))
    first = settle(eng, ses)
    a_before = snapshot(ses, "a")
    m = 9
    eng.add_points(ses, m, "b", box=box(ses, B_BOX))
    assert eng.pending_passes(ses) == [PassPlan(m, False, ("b",)), PassPlan(m, True, ("b",))]
    settle(eng, ses)
    assert ses.attention_calls == {"a": N - 1, "b": N - 1}  # b: every frame but its prompt; a: nothing new
    assert_same(snapshot(ses, "a"), a_before)  # a's frames before m were not re-tracked in reverse
    t = ses.objects.get("b")
    assert all(t.tracked[f] is (f < m) for f in range(N) if f != m)
    for f in range(N):
        assert np.array_equal(eng.frame_result(ses, f).logits[0], first[f][0])

    # b alone in its own session, propagated the sam2 way, gives exactly the same masks (objects are independent)
    alone = eng.start_session(open_source(frames))
    eng.add_points(alone, m, "b", box=box(alone, B_BOX))
    ref = {r.frame: r.logits[0] for r in eng.propagate(alone, start=m)}
    ref.update({r.frame: r.logits[0] for r in eng.propagate(alone, start=m, reverse=True)})
    for f in range(N):
        assert np.array_equal(eng.frame_result(ses, f).logits[1], ref[f]), f"frame {f}"


def test_correction_on_a_reverse_tracked_frame_retracks_backward(eng, frames):
    ses = eng.start_session(open_source(frames))
    m = 10
    eng.add_points(ses, m, "a", box=box(ses, A_BOX))
    settle(eng, ses)
    eng.add_points(ses, 4, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[1])
    assert eng.pending_passes(ses) == [PassPlan(4, True, ("a",))]
    # a new prompt on the first prompt frame itself changes both directions
    eng.add_points(ses, m, "a", box=box(ses, (0.25, 0.3, 0.6, 0.75)))
    assert eng.pending_passes(ses) == [PassPlan(m, False, ("a",)), PassPlan(m, True, ("a",))]


def test_a_cancelled_pass_leaves_exactly_the_rest_pending(eng, frames):
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses, A_BOX))
    gen = eng.propagate(ses, start=0, objects=["a"])
    for _ in range(5):
        next(gen)
    gen.close()
    assert eng.pending_passes(ses) == [PassPlan(5, False, ("a",))]
    assert sorted(settle(eng, ses)) == list(range(5, N))


def test_click_on_a_tracked_frame_skips_memory_attention_and_is_exact(model_128_f32, frames):
    """A second and third click on a frame propagation reached reuse its conditioned features; the masks
    equal an engine that recomputes them (cache off)."""
    outs = []
    for cache in (128 << 20, 0):
        e = VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32", conditioned_cache_bytes=cache))
        ses = e.start_session(open_source(frames))
        e.add_points(ses, 0, "a", box=box(ses, A_BOX))
        e.add_points(ses, 0, "b", box=box(ses, B_BOX))
        settle(e, ses)
        before = dict(ses.attention_calls)
        clicks = [e.add_points(ses, 7, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[1]).logits,
                  e.add_points(ses, 7, "a", points=[[0.35 * ses.width, 0.4 * ses.height]], labels=[0],
                               clear_old_points=False).logits,
                  e.add_points(ses, 7, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[1]).logits]
        extra = {k: ses.attention_calls[k] - before[k] for k in before}
        outs.append(clicks)
        if cache:
            assert extra == {"a": 0, "b": 0}, "a click on a tracked frame must reuse the propagation's attention"
        else:
            assert extra == {"a": 3, "b": 0}
    for got, ref in zip(*outs):
        assert np.array_equal(got, ref)
    assert not np.array_equal(outs[0][0], outs[0][1]), "the added negative point had no effect"


def test_prompts_on_two_frames_of_a_new_object_track_it_once(eng, frames):
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses, A_BOX))
    eng.add_points(ses, 5, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[0])
    assert eng.pending_passes(ses) == [PassPlan(0, False, ("a",))]
    assert sorted(settle(eng, ses)) == list(range(N)) and eng.pending_passes(ses) == []
    assert ses.attention_calls["a"] == N - 2


def _wait(cond, timeout=60.0):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return False


def test_prewarm_encodes_ahead_only_while_no_propagation_runs(model_128_f32, frames):
    e = VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32"))
    ses = e.start_session(open_source(frames))
    e.prewarm(ses)  # a task was opened: its first frames
    assert _wait(lambda: e.prewarmer.encoded == 4)
    assert all(e.features.get((ses.source.key, f)) is not None for f in range(4))
    e.add_points(ses, 0, "a", box=box(ses, A_BOX))
    gen = e.propagate(ses, objects=["a"])
    next(gen)  # a propagation is running (and holds the session)
    calls = e.runtime.calls("image_encoder")
    e.prewarm(ses, [12, 13, 14])
    assert not _wait(lambda: e.runtime.calls("image_encoder") > calls, timeout=1.5), "prewarm ran during propagation"
    gen.close()  # propagation over: prewarm goes on, one frame at a time
    assert _wait(lambda: e.prewarmer.encoded == 7)
    assert all(e.features.get((ses.source.key, f)) is not None for f in (12, 13, 14))


def test_click_latency_measures_the_cached_paths(eng, frames):
    from backend.engine.latency import click_latency
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses, A_BOX))
    settle(eng, ses)
    new = click_latency(eng, ses, 5, kind="new_object", repeats=5)
    tracked = click_latency(eng, ses, 5, kind="tracked_frame", obj_id="a", repeats=5)
    assert new["attention_runs"] == 0 and tracked["attention_runs"] == 0
    assert 0 < new["p50_s"] <= new["p95_s"] and ses.objects.ids == ["a"]
