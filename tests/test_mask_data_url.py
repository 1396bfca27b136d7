"""Brush masks as PNG data URLs (backend.ls.maskurl): exact both ways, decoded as the editor reads them, refused
when malformed; a click's answer carries them (INTERACTIVE_MASK_FORMAT=png, the default) while stored predictions
and batch answers stay RLE; a draft the editor autosaved with them rebuilds a task, an edited data URL as a
correction."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from backend.ls.maskurl import PREFIX, data_url_to_mask, mask_to_data_url, value_mask
from backend.ls.rle import mask_to_rle, rle_to_mask
from backend.settings import Settings, SettingsError
from tests import appkit as kit
from tests.appkit import AUTH, N


def _png_url(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return PREFIX + base64.b64encode(buf.getvalue()).decode()


@pytest.mark.parametrize("shape", [(480, 640), (144, 176), (7, 13), (1, 1), (33, 9)])
def test_round_trip_is_exact_and_decodes_as_the_editor_reads_it(shape):
    """The editor draws where RED is non-zero and saves where ALPHA is: both must be the mask, exactly."""
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    mask = rng.random(shape) < 0.4
    url = mask_to_data_url(mask)
    assert url.startswith(PREFIX)
    rgba = np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(PREFIX):]))).convert("RGBA"))
    assert rgba.shape == shape + (4,)
    assert np.array_equal(rgba[mask], np.full((mask.sum(), 4), 255)) and not rgba[~mask].any()
    assert np.array_equal(data_url_to_mask(url, *shape), mask)
    assert np.array_equal(data_url_to_mask(mask_to_data_url(mask.astype(np.uint8) * 7), *shape), mask)


def test_a_smooth_mask_is_smaller_than_its_rle_json():
    yy, xx = np.mgrid[:480, :640]
    mask = (yy - 200) ** 2 / 120 ** 2 + (xx - 330) ** 2 / 180 ** 2 < 1
    rle_json = len(str(mask_to_rle(mask)).replace(" ", ""))
    assert len(mask_to_data_url(mask)) * 2 < rle_json, (len(mask_to_data_url(mask)), rle_json)


@pytest.mark.parametrize("url,needle", [
    ("data:image/jpeg;base64,AAAA", "must start with"),
    (PREFIX + "not base64!", "not valid base64"),
    (PREFIX + base64.b64encode(b"GIF89a not a png").decode(), "not a readable PNG"),
    (None, "must start with"),
])
def test_malformed_data_urls_are_refused(url, needle):
    with pytest.raises(ValueError, match=needle):
        data_url_to_mask(url, 4, 4)


def test_a_png_of_another_size_is_refused_before_its_pixels_are_decoded(monkeypatch):
    url = _png_url(Image.new("L", (64, 48)))
    with pytest.raises(ValueError, match="64x48 image but the mask is 32x24"):
        data_url_to_mask(url, 24, 32)
    with pytest.raises(ValueError, match="frames are 640x480"):  # the declared size against the task's frames
        data_url_to_mask(url, 48, 64, frame_size=(640, 480))
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("pixels decoded"))
    with pytest.raises(ValueError, match="64x48 image"):
        data_url_to_mask(url, 24, 32)


def test_an_opaque_png_is_all_mask_as_the_editor_would_save_it():
    """The editor saves the image's alpha channel: a PNG without transparency covers the whole frame."""
    assert data_url_to_mask(_png_url(Image.new("L", (5, 3), 0)), 3, 5).all()


def test_value_mask_reads_rle_data_url_or_their_union():
    a = np.zeros((6, 8), bool)
    a[1:3, 1:4] = True
    b = np.zeros((6, 8), bool)
    b[2:5, 5:7] = True
    assert np.array_equal(value_mask({"rle": mask_to_rle(a)}, 6, 8), a)
    assert np.array_equal(value_mask({"maskDataURL": mask_to_data_url(b)}, 6, 8), b)
    assert np.array_equal(value_mask({"rle": mask_to_rle(a), "maskDataURL": mask_to_data_url(b)}, 6, 8), a | b)
    with pytest.raises(ValueError, match="neither"):
        value_mask({"format": "rle"}, 6, 8)


def test_the_setting_defaults_to_png_and_refuses_other_formats():
    assert Settings.from_env({"MODEL_DIR": "m"}).interactive_mask_format == "png"
    assert Settings.from_env({"MODEL_DIR": "m", "INTERACTIVE_MASK_FORMAT": " RLE "}).interactive_mask_format == "rle"
    with pytest.raises(SettingsError, match="INTERACTIVE_MASK_FORMAT='gif' is not one of png, rle"):
        Settings.from_env({"MODEL_DIR": "m", "INTERACTIVE_MASK_FORMAT": "gif"})


# ---- through the app ----------------------------------------------------------------------------------------------
def _predict(client, task, context):
    r = kit.predict(client, task, kit.FRAMES_CONFIG, context, headers=AUTH)
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()["results"][0]


def test_a_click_answers_data_urls_of_exactly_the_masks_stored_as_rle(app, client, media):
    _, size = media
    tid = 141
    task, rect = kit.tracked_box(client, tid, size)
    click = kit.brushes(_predict(client, task, [rect])["result"])
    batch = kit.brushes(_predict(client, task, None)["result"])  # LS stores a batch answer as it is: RLE
    assert len(click) == len(batch) >= N - 1
    assert all("maskDataURL" in r["value"] and "rle" not in r["value"] for r in click)
    assert all("rle" in r["value"] and "maskDataURL" not in r["value"] for r in batch)
    assert [{k: v for k, v in r.items() if k != "value"} for r in click] == \
        [{k: v for k, v in r.items() if k != "value"} for r in batch]
    got, want = kit.masks_of(click), kit.masks_of(batch)
    assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in got)
    tracker = app.config["SERVICE"].sessions.peek(tid).tracker
    stored = kit.masks_of(tracker.results())  # what the writer puts into LS
    assert all(np.array_equal(stored[k], want[k]) for k in want) and stored.keys() == want.keys()


def test_a_draft_autosaved_with_data_urls_rebuilds_the_task_with_its_edited_mask(app, client, media):
    """After a restart (here: a new task of the same media), LS sends the annotator's draft as the editor autosaved
    it (fast serialisation): our masks still as data URLs, one of them edited in place (a Magic Wand edit replaces
    the region's data URL), and our RLE prediction. The unchanged masks are our own output; the edited one is a
    correction, read from its data URL (a parser that knew only RLE skipped it, and the rebuild lost the edit)."""
    _, size = media
    first, rect = kit.tracked_box(client, 142, size)
    answer = _predict(client, first, [rect])
    prediction = _predict(client, first, None)
    ours = kit.brushes(answer["result"])
    assert ours and all("maskDataURL" in r["value"] for r in ours)
    k = 5
    edited = np.zeros((size[1], size[0]), bool)
    edited[10:70, 20:100] = True
    draft = [rect] + [dict(r, value=dict(r["value"], maskDataURL=mask_to_data_url(edited))) if r["item_index"] == k
                      else r for r in ours]
    again = kit.frames_task(143, "cup", N, drafts=[{"id": 9, "result": draft}],
                            predictions=[{"id": 5, "model_version": prediction["model_version"],
                                          "result": prediction["result"]}])
    _predict(client, again, [rect])
    ledger = app.config["SERVICE"].sessions.peek(143).tracker.ledger
    kinds = sorted((e.kind, e.frame) for e in ledger.entries.values())
    assert kinds == [("box", 0), ("mask", k)], ledger.entries
    assert np.array_equal(next(e.mask for e in ledger.entries.values() if e.kind == "mask"), edited)
    kit.wait_job(client, 143, headers=AUTH)
    rebuilt, want = kit.masks_by_frame(_predict(client, again, None)["result"]), kit.masks_of(prediction["result"])
    assert np.array_equal(rebuilt[k], edited)
    assert all(np.array_equal(rebuilt[f], m) for (_, f), m in want.items() if f < k)  # before the edit: unchanged


def test_rle_of_a_data_url_mask_round_trips_through_rle_to_mask():
    """What the editor saves from one of our data URLs (kit.as_saved) is the RLE of the same mask."""
    mask = np.random.default_rng(3).random((48, 64)) < 0.5
    res = kit.brush("sam2-1-0", 0, mask)
    url_form = dict(res, value={"format": "rle", "maskDataURL": mask_to_data_url(mask), "brushlabels": ["Car"]})
    saved = kit.as_saved([url_form])[0]
    assert saved == res and np.array_equal(rle_to_mask(saved["value"]["rle"], 48, 64), mask)
