"""An interactive answer on a grown task is cheap and exact: cached JSON per unchanged result (the same bytes as
jsonify, in a cache bounded by ANSWER_CACHE_MB), our own unchanged masks in a context recognised without decoding them, a bracket-only depth check."""
from __future__ import annotations

import json
import re
import random

import numpy as np
import pytest
from flask import Flask

from backend.ls import regions as regions_module
from backend.serving import rawjson
from backend.serving.bodies import json_depth
from tests import appkit as kit
from tests.appkit import AUTH, N


def _depth_reference(raw: bytes) -> int:
    """The running sum over every byte (what json_depth computed before it summed over brackets only)."""
    stripped = np.frombuffer(re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', raw, flags=re.DOTALL), dtype=np.uint8)
    step = np.zeros(stripped.size, dtype=np.int32)
    step[(stripped == ord("[")) | (stripped == ord("{"))] = 1
    step[(stripped == ord("]")) | (stripped == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def test_json_depth_equals_the_running_sum_over_every_byte():
    rng = random.Random(0)
    alphabet = ['[', ']', '{', '}', '"', '\\', 'a', '1', ',', ':', ' ']
    bodies = [b"", b"[]", b"{}", b'{"a":"[[[["}', b"[[[1,2],[3]],{\"k\":[[]]}]", b"]]]]", b'"unterminated [[['
              ] + ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 200))).encode() for _ in range(500)]
    for raw in bodies:
        assert json_depth(raw) == _depth_reference(raw), raw


def test_fragments_splice_into_the_bytes_jsonify_sends():
    app = Flask(__name__)
    inner = {"id": "sam2-1-3", "value": {"rle": list(range(256)), "brushlabels": ["Bäume \u2603"]}, "item_index": 3,
             "score": 0.5, "meta": {"text": ["Car 1"]}}
    frag = rawjson.Fragment(inner, rawjson.text_of(inner))
    answer = {"results": [{"result": [{"id": "kp", "x": 1.5, "z": None}, frag, frag], "model_version": "v\u00e9"}]}
    with app.app_context():
        expected = app.json.response(answer).get_data(as_text=True)
    assert f"{rawjson.dumps(answer)}\n" == expected
    assert rawjson.dumps({"a": [1, {"b": 2}]}) == json.dumps({"a": [1, {"b": 2}]}, **rawjson.OPTIONS)
    with pytest.raises(TypeError):
        rawjson.dumps({1: frag})
    stale = rawjson.Fragment(inner, '"not this"')  # the text is what goes out: the app must only wrap fresh ones
    assert rawjson.dumps([stale]) == '["not this"]'


def test_the_text_cache_keeps_the_recently_used_within_its_bytes():
    cache = rawjson.TextCache(10)
    cache.put(b"a", "1234")
    cache.put(b"b", "5678")
    assert cache.get(b"a") == "1234"  # now the most recently used
    cache.put(b"c", "90ab")  # 12 bytes > 10: the least recently used (b) goes
    assert cache.get(b"b") is None and cache.get(b"a") == "1234" and cache.get(b"c") == "90ab"
    assert cache.nbytes == 8
    cache.put(b"d", "x" * 11)  # larger than the whole cache: not kept, nothing evicted for it
    assert cache.get(b"d") is None and cache.nbytes == 8
    off = rawjson.TextCache(0)
    off.put(b"a", "1")
    assert off.get(b"a") is None and off.nbytes == 0


@pytest.fixture
def decodes(monkeypatch):
    calls = []
    real = regions_module.value_mask

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)
    monkeypatch.setattr(regions_module, "value_mask", counting)
    return calls


def _answer(client, task, context):
    r = kit.predict(client, task, kit.FRAMES_CONFIG, context, headers=AUTH)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r


def test_our_unchanged_masks_in_a_context_are_not_decoded_and_change_nothing(app, client, media, decodes):
    _, size = media
    tid = 131
    task, rect = kit.tracked_box(client, tid, size)
    full = _answer(client, task, [rect])
    ours = kit.as_saved(kit.brushes(full.get_json()["results"][0]["result"]))  # as the editor sends them back
    assert len(ours) >= N - 1
    with app.app_context():  # the spliced answer is exactly what jsonify would have sent for the same content
        assert full.get_data() == app.json.response(full.get_json()).get_data()
    texts = app.config["SERVICE"].answer_texts
    assert 0 < texts.nbytes <= texts.max_bytes
    job = app.config["SERVICE"].jobs.get(tid)
    decodes.clear()
    again = _answer(client, task, [rect] + ours)
    assert decodes == [], "our own unchanged masks were decoded"
    assert again.get_data() == full.get_data()
    assert app.config["SERVICE"].jobs.get(tid) is job, "an echo of our own output started a job"
    # anything that differs from what we sent goes the full way: a float frame index, then an edited mask
    as_float = dict(ours[1], item_index=float(ours[1]["item_index"]))
    _answer(client, task, [rect] + [as_float] + ours[2:])
    assert decodes == [1]
    edited = kit.masks_of([ours[3]])[(ours[3]["id"], ours[3]["item_index"])].copy()
    edited[:, : size[0] // 2] = ~edited[:, : size[0] // 2]
    _answer(client, task, [rect] + ours[:3] + [kit.brush(ours[3]["id"], ours[3]["item_index"], edited)] + ours[4:])
    assert decodes == [1, 1]
    entry = app.config["SERVICE"].sessions.peek(tid).tracker.ledger.entries[ours[3]["id"]]
    assert entry.kind == "mask" and np.array_equal(entry.mask, edited), "an edited mask is a correction"


def test_a_correction_echoed_back_as_our_output_stays_a_prompt(app, client, media, decodes):
    """A hand-corrected mask becomes a prompt; our next answer carries it as our own result. When the editor sends
    that result back unchanged it is not decoded, but it is present: the ledger must keep the correction."""
    _, size = media
    tid = 132
    task, rect = kit.tracked_box(client, tid, size)
    k = 4
    fix = np.zeros((size[1], size[0]), bool)
    fix[10:60, 20:90] = True
    _answer(client, task, [rect, kit.brush(f"sam2-1-{k}", k, fix)])
    kit.wait_job(client, tid, headers=AUTH)
    answer = _answer(client, task, [rect, kit.brush(f"sam2-1-{k}", k, fix)])
    echoed = kit.as_saved(kit.brushes(answer.get_json()["results"][0]["result"]))
    assert any(r["id"] == f"sam2-1-{k}" for r in echoed)
    decodes.clear()
    again = _answer(client, task, [rect] + echoed)
    assert decodes == []
    ledger = app.config["SERVICE"].sessions.peek(tid).tracker.ledger
    assert f"sam2-1-{k}" in ledger.entries and np.array_equal(ledger.entries[f"sam2-1-{k}"].mask, fix)
    assert again.get_data() == answer.get_data()
