"""The engine reads both export formats and refuses what it cannot run, saying what to do (no EdgeTAM venv needed:
the format checks run on a SAM 2.1 export whose manifest and constants are rewritten)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from backend.engine import ModelBundle, ModelError


def _copy(src, dst, **manifest):
    dst.mkdir()
    for f in src.iterdir():
        if f.suffix in (".xml", ".bin"):
            (dst / f.name).symlink_to(f)
    shutil.copy(src / "constants.npz", dst / "constants.npz")
    m = json.loads((src / "manifest.json").read_text())
    m.update(manifest)
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_format_1_reads_spatial_memories(model_128_f32):
    b = ModelBundle.load(model_128_f32)
    assert (b.family, b.memory.layout, b.memory.tokens_per_frame, b.memory.token_dim) == ("sam2.1", "spatial", 64, 64)
    pos = b.constants["maskmem_pos_enc"]
    assert np.array_equal(b.memory.pos_enc, pos.reshape(64, -1).T)
    mem = np.arange(64 * 8 * 8, dtype=np.float32).reshape(64, 8, 8)
    assert np.array_equal(b.memory.tokens(mem)[3], mem[:, 0, 3])  # token 3 = row 0, column 3, all channels


@pytest.mark.parametrize("version", [0, 3, None])
def test_unknown_formats_are_refused(model_128_f32, tmp_path, version):
    d = _copy(model_128_f32, tmp_path / "m", format_version=version)
    with pytest.raises(ModelError, match="format_version .* this engine reads 1 or 2"):
        ModelBundle.load(d)


def test_format_2_needs_a_consistent_token_memory(model_128_f32, tmp_path):
    with pytest.raises(ModelError, match="layout 'tokens'"):
        ModelBundle.load(_copy(model_128_f32, tmp_path / "a", format_version=2))
    # a token layout whose position encoding does not fit (here: SAM 2.1's spatial one) is refused too
    with pytest.raises(ModelError, match="inconsistent"):
        ModelBundle.load(_copy(model_128_f32, tmp_path / "b", format_version=2,
                               memory={"layout": "tokens", "tokens_per_frame": 512, "token_dim": 64}))
