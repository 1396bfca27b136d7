"""Bad checkpoints and broken downloads fail with one sentence that says what to do (model_export.checkpoint)."""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
import torch
from werkzeug.wrappers import Response

from model_export.build import build_video_model
from model_export.catalog import get_model
from model_export.checkpoint import SAM21_ONLY_KEYS, CheckpointError, check_keys, download, load_state_dict
from tests.fakehttp import FakeHost, closed_port_url
from tests.models import ROOT

DATA = os.urandom(3 * (1 << 20) + 123)
SPEC = get_model("sam2.1_hiera_tiny")


@pytest.fixture(scope="module")
def tiny_state():
    return {k: v.clone() for k, v in build_video_model(SPEC, image_size=256, seed=0).state_dict().items()}


@pytest.fixture()
def host():
    server = FakeHost()
    yield server
    server.close()


def test_an_interrupted_download_resumes_where_it_stopped(host, tmp_path):
    def handler(request):
        rng = request.headers.get("Range")
        if rng is None:  # first try: the connection drops after 1 MiB
            def body():
                yield DATA[: 1 << 20]
                raise ConnectionResetError("cut")
            return Response(body(), headers={"Content-Length": str(len(DATA))}, content_type="application/octet-stream")
        start = int(rng.removeprefix("bytes=").rstrip("-"))
        return Response(DATA[start:], status=206, content_type="application/octet-stream",
                        headers={"Content-Range": f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"})
    host.routes["/ckpt.pt"] = handler
    dest = tmp_path / "ckpt.pt"
    with pytest.raises(CheckpointError, match="run the same command again to resume"):
        download(host.url + "/ckpt.pt", dest, timeout=5)
    part = tmp_path / "ckpt.pt.part"
    assert not dest.exists() and 0 < part.stat().st_size < len(DATA)
    have = part.stat().st_size
    download(host.url + "/ckpt.pt", dest, timeout=5)
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(DATA).digest() and not part.exists()
    assert host.hits("/ckpt.pt")[-1]["auth"] is None
    assert len(host.hits("/ckpt.pt")) == 2 and have >= 1 << 20


def test_offline_and_http_errors_say_what_to_do(host, tmp_path):
    with pytest.raises(CheckpointError, match="offline.*--checkpoint PATH.*--random-init"):
        download(closed_port_url() + "/x.pt", tmp_path / "x.pt", timeout=2)
    with pytest.raises(CheckpointError, match="HTTP 404"):
        download(host.url + "/missing.pt", tmp_path / "y.pt", timeout=2)


def test_unreadable_files(tmp_path, tiny_state):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_state_dict(tmp_path / "nope.pt")
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_state_dict(text)
    whole = tmp_path / "whole.pt"
    torch.save({"model": tiny_state}, whole)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state_dict(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": {}}, other)
    with pytest.raises(CheckpointError, match="no 'model' state dict"):
        load_state_dict(other)
    assert load_state_dict(whole).keys() == tiny_state.keys()


def test_sam20_and_other_sizes_are_named(tiny_state):
    check_keys(tiny_state, tiny_state, SPEC)  # the matching checkpoint passes
    sam20 = {k: v for k, v in tiny_state.items() if k not in SAM21_ONLY_KEYS}
    with pytest.raises(CheckpointError, match="SAM 2.0 checkpoint"):
        check_keys(sam20, tiny_state, SPEC)
    fewer_blocks = {k: v for k, v in tiny_state.items() if not k.startswith("image_encoder.trunk.blocks.11.")}
    with pytest.raises(CheckpointError, match="does not match sam2.1_hiera_tiny"):
        check_keys(fewer_blocks, tiny_state, SPEC)
    key = "image_encoder.trunk.patch_embed.proj.weight"
    reshaped = dict(tiny_state, **{key: torch.zeros(5, 3, 7, 7)})
    with pytest.raises(CheckpointError, match="other shapes"):
        check_keys(reshaped, tiny_state, SPEC)


def test_cli_prints_one_sentence_and_exits_2(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00" * 100)
    proc = subprocess.run([sys.executable, "-m", "model_export", "--model", "sam2.1_hiera_tiny", "--checkpoint",
                           str(bad), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "not a readable PyTorch checkpoint" in proc.stderr
    assert not (tmp_path / "out").exists()
