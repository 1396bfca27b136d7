"""Engine behaviour beyond parity: corrections, caches, memory bounds, batching, errors."""
from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from backend.engine import EngineSettings, PromptError, SessionBusy, VideoPredictor, open_source
from tests.parity import load_mask

N = 24
BOX = (0.3, 0.3, 0.6, 0.7)


@pytest.fixture(scope="module")
def frames(clips_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("cup")
    cap = cv2.VideoCapture(str(clips_dir / "cup.mp4"))
    for i in range(N):
        ok, bgr = cap.read()
        assert ok
        cv2.imwrite(str(d / f"{i:05d}.jpg"), bgr)
    return d


def make_engine(model, **kw):
    kw.setdefault("precision", "f32")
    return VideoPredictor(EngineSettings(model_dir=model, **kw))


def box(session, frac=BOX):
    w, h = session.width, session.height
    return (frac[0] * w, frac[1] * h, frac[2] * w, frac[3] * h)


def run(engine, session, **kw):
    return {r.frame: r.logits for r in engine.propagate(session, **kw)}


def test_correction_keeps_earlier_frames_and_reuses_cached_features(model_256_f32, frames, clips_dir):
    eng = make_engine(model_256_f32)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    first = run(eng, ses)
    rt = eng.runtime
    assert rt.calls("image_encoder") == N
    attn_before = rt.calls("memory_attention")

    k = 12
    mask = load_mask(str(clips_dir / "cup_masks" / f"{k:05d}.png"))
    eng.add_mask(ses, k, "a", mask)
    second = run(eng, ses, start=k)

    assert sorted(second) == list(range(k, N))  # nothing before k is recomputed
    assert rt.calls("image_encoder") == N        # every frame's features came from the cache
    assert rt.calls("memory_attention") - attn_before == N - k - 1  # frames k+1..N-1 only (k is a prompt frame)
    for f in range(k):
        assert np.array_equal(eng.frame_result(ses, f).logits, first[f]), f"frame {f} changed"
    assert not all(np.array_equal(second[f], first[f]) for f in range(k + 1, N)), "the correction had no effect"


def test_evicted_memories_spill_to_disk_and_stay_exact(model_256_f32, frames, tmp_path):
    roomy = make_engine(model_256_f32, max_resident_frames=64)
    tight = make_engine(model_256_f32, max_resident_frames=7, spill_dir=tmp_path)
    results = []
    for eng in (roomy, tight):
        ses = eng.start_session(open_source(frames))
        eng.add_points(ses, 0, "a", box=box(ses))
        run(eng, ses)
        # a correction click on an early frame needs that frame's old logits and the memories before it
        eng.add_points(ses, 5, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[0])
        results.append(run(eng, ses, start=5))
        if eng is tight:
            assert ses.store.resident_frames <= 7 and ses.store.spilled_bytes > 0
            eng.close_session(ses)
            assert not any(tmp_path.iterdir()), "spill files must be removed with the session"
    for f in results[0]:
        assert np.array_equal(results[0][f], results[1][f]), f"frame {f} differs after spilling"


def test_dropped_memories_still_track(model_256_f32, frames):
    eng = make_engine(model_256_f32, max_resident_frames=7)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    run(eng, ses)
    eng.add_points(ses, 3, "a", points=[[0.5 * ses.width, 0.5 * ses.height]], labels=[1])
    again = run(eng, ses, start=3)
    assert sorted(again) == list(range(3, N)) and ses.store.resident_frames <= 7


def test_exports_without_a_shared_frame_get_one_call_per_object(model_256_f32, frames, tmp_path):
    """An export written before `memory_attention_objects_share_frame` (its graph takes one object's frame per row),
    or ATTENTION_BATCH=1: the engine calls memory attention once per object; the masks are those of the batched
    call."""
    import json
    old = tmp_path / "old"
    old.mkdir()
    for f in model_256_f32.iterdir():
        (old / f.name).symlink_to(f)
    (old / "manifest.json").unlink()
    m = json.loads((model_256_f32 / "manifest.json").read_text())
    del m["memory_attention_objects_share_frame"]
    (old / "manifest.json").write_text(json.dumps(m))
    results = []
    for model, batch, calls_per_frame in ((old, 3, 2), (model_256_f32, 1, 2), (model_256_f32, 3, 1)):
        eng = make_engine(model, attention_batch=batch)
        ses = eng.start_session(open_source(frames))
        eng.add_points(ses, 0, "a", box=box(ses))
        eng.add_points(ses, 0, "b", box=box(ses, (0.1, 0.1, 0.4, 0.5)))
        before = eng.runtime.calls("memory_attention")
        results.append(run(eng, ses, max_frames=6))
        tracked = len(results[-1]) - 1  # frame 0 is the prompted frame: no memory attention there
        assert tracked >= 5 and eng.runtime.calls("memory_attention") - before == calls_per_frame * tracked
    for f in results[0]:
        assert np.abs(results[0][f] - results[1][f]).max() < 1e-4 * np.abs(results[1][f]).max(), f


def test_two_objects_on_one_frame_match_single_object_runs(model_256_f32, frames):
    eng = make_engine(model_256_f32, attention_batch=2)
    both = eng.start_session(open_source(frames))
    eng.add_points(both, 0, "a", box=box(both))
    eng.add_points(both, 0, "b", box=box(both, (0.1, 0.1, 0.4, 0.5)))
    calls = eng.runtime.calls("memory_attention")
    together = run(eng, both)
    # both objects' memories have the same shapes on every frame: with ATTENTION_BATCH=2, one call per tracked frame,
    # the frame given once for both (tracker.condition); each object is conditioned once per tracked frame
    assert eng.runtime.bundle.objects_share_frame
    assert eng.runtime.calls("memory_attention") - calls == N - 1
    assert both.attention_calls == {"a": N - 1, "b": N - 1}
    for i, obj in enumerate(("a", "b")):
        alone = eng.start_session(open_source(frames))
        eng.add_points(alone, 0, obj, box=box(alone, BOX if obj == "a" else (0.1, 0.1, 0.4, 0.5)))
        single = run(eng, alone)
        for f in single:
            assert np.abs(together[f][i] - single[f][0]).max() < 1e-4


def test_remove_object_and_clear_prompts(model_256_f32, frames):
    eng = make_engine(model_256_f32)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    eng.add_points(ses, 2, "b", points=[[10, 10]], labels=[1])
    run(eng, ses, max_frames=4)
    eng.remove_object(ses, "b")
    assert eng.frame_result(ses, 1).object_ids == ["a"]
    eng.clear_prompts(ses, 0, "a")  # the only prompt: the object has nothing left to track from
    with pytest.raises(PromptError, match="has no prompts"):
        run(eng, ses)
    with pytest.raises(PromptError, match="unknown object"):
        eng.remove_object(ses, "zzz")


def test_an_object_whose_prompts_were_all_cleared_starts_over(model_256_f32, frames):
    """Its only prompt deleted, then a new one on a frame it was tracked on (an annotator replacing the object's
    only region): the object is tracked from the new prompt alone, exactly as a new object prompted there, and no
    result of the deleted prompt survives."""
    eng = make_engine(model_256_f32)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    eng.add_points(ses, 0, "b", points=[[40, 40]], labels=[1])
    run(eng, ses)
    b_before = {f: eng.frame_result(ses, f).logits[1] for f in range(N)}
    eng.clear_prompts(ses, 0, "a")
    k = 5
    again = eng.add_points(ses, k, "a", points=[[60, 50]], labels=[1])
    assert eng.pending_passes(ses) and all(p.objects == ("a",) for p in eng.pending_passes(ses))
    restarted = {f: r.logits[r.object_ids.index("a")] for f, r in enumerate(
        [eng.frame_result(ses, f) for f in range(N)]) if f != k}
    assert all((v <= -1000).all() for v in restarted.values()), "the deleted prompt's masks survived"
    for p in eng.pending_passes(ses):
        run(eng, ses, start=p.start, reverse=p.reverse, objects=p.objects)

    ref = make_engine(model_256_f32)
    rses = ref.start_session(open_source(frames))
    fresh = ref.add_points(rses, k, "a", points=[[60, 50]], labels=[1])
    np.testing.assert_array_equal(again.logits[again.object_ids.index("a")], fresh.logits[0])
    run(ref, rses, start=k)
    run(ref, rses, start=k, reverse=True)
    for f in range(N):
        got, want = eng.frame_result(ses, f), ref.frame_result(rses, f)
        np.testing.assert_allclose(got.logits[got.object_ids.index("a")], want.logits[0], atol=1e-4)
        np.testing.assert_array_equal(got.logits[got.object_ids.index("b")], b_before[f])


def test_a_click_on_an_object_left_with_unpropagated_prompts_only_is_taken_without_memory(model_256_f32, frames):
    """Box on frame 0, tracked; a point on tracked frame 5 (conditioned on frame 0's memory); the box deleted before
    any propagation; the point moved: nothing conditions the object any more (sam2 fails an assertion here), so the
    click is decoded without memory, and the pending passes track the object from its point."""
    eng = make_engine(model_256_f32, conditioned_cache_bytes=0)  # every conditioned click runs memory attention
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    run(eng, ses)
    attn = eng.runtime.calls("memory_attention")
    eng.add_points(ses, 5, "a", points=[[60, 50]], labels=[1])
    assert eng.runtime.calls("memory_attention") == attn + 1  # conditioned on frame 0's memory
    eng.clear_prompts(ses, 0, "a")
    moved = eng.add_points(ses, 5, "a", points=[[64, 52]], labels=[1])
    assert eng.runtime.calls("memory_attention") == attn + 1  # no memory to attend to
    assert (moved.logits[0] > 0).any()
    passes = eng.pending_passes(ses)
    assert passes and all(p.objects == ("a",) for p in passes)
    for p in passes:
        run(eng, ses, start=p.start, reverse=p.reverse, objects=p.objects)
    assert not eng.pending_passes(ses)


@pytest.mark.parametrize("call,match", [
    (lambda e, s: e.add_points(s, N, 1, box=(0, 0, 5, 5)), "out of range"),
    (lambda e, s: e.add_points(s, -1, 1, box=(0, 0, 5, 5)), "out of range"),
    (lambda e, s: e.add_points(s, 0, 1, points=[[1, 1]], labels=[2]), "labels must be 1"),
    (lambda e, s: e.add_points(s, 0, 1, points=[[1, 1]]), "together"),
    (lambda e, s: e.add_points(s, 0, 1, box=(5, 5, 1, 1)), "x1 > x0"),
    (lambda e, s: e.add_points(s, 0, 1, points=[[np.nan, 1]], labels=[1]), "finite"),
    (lambda e, s: e.add_points(s, 0, 1), "points"),
    (lambda e, s: e.add_mask(s, 0, 1, np.zeros(5, bool)), "2-D"),
    (lambda e, s: list(e.propagate(s)), "no objects"),
])
def test_bad_calls_are_clear_errors_and_change_nothing(model_256_f32, frames, call, match):
    eng = make_engine(model_256_f32)
    ses = eng.start_session(open_source(frames))
    with pytest.raises(PromptError, match=match):
        call(eng, ses)
    assert len(ses.objects) == 0


def test_busy_session_is_reported_not_corrupted(model_256_f32, frames):
    eng = make_engine(model_256_f32, busy_timeout_s=0.1)
    ses = eng.start_session(open_source(frames))
    eng.add_points(ses, 0, "a", box=box(ses))
    gen = eng.propagate(ses)
    next(gen)  # a propagation holds the session
    err = []
    t = threading.Thread(target=lambda: err.append(pytest.raises(SessionBusy, eng.add_points, ses, 3, "a", box=box(ses))))
    t.start()
    t.join()
    assert err
    gen.close()  # cancelling releases it
    eng.add_points(ses, 3, "a", box=box(ses))


def test_engine_runs_without_torch(model_256_f32, frames):
    code = f"""
import sys
sys.modules["torch"] = None  # any import of torch now fails
from backend.engine import VideoPredictor, EngineSettings, open_source
eng = VideoPredictor(EngineSettings(model_dir={str(model_256_f32)!r}))
ses = eng.start_session(open_source({str(frames)!r}))
eng.add_points(ses, 0, 1, box=(50, 50, 300, 300))
n = sum(1 for _ in eng.propagate(ses, max_frames=3))
assert "torch" not in [m for m in sys.modules if sys.modules[m] is not None], "torch got imported"
print(n)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "4"
