"""ATTENTION_BATCH=auto: objects per memory-attention call from the memory limit (backend.engine.batching)."""
from __future__ import annotations

import os

import pytest

from backend.engine import batching
from backend.engine.batching import attention_bytes_per_object, auto_attention_batch, memory_limit_bytes
from backend.settings import Settings, SettingsError

MB, GB = 1 << 20, 1 << 30


def test_bytes_per_object_scale_with_tokens_squared_and_precision():
    assert attention_bytes_per_object(1024, "bf16") == 240 * MB
    assert attention_bytes_per_object(1024, "f32") == 480 * MB
    assert attention_bytes_per_object(512, "bf16") == 15 * MB         # 240 / 16
    assert attention_bytes_per_object(128, "f32") == 480 * MB // 4096  # (1/8)^4, doubled


@pytest.mark.parametrize("size,precision,memory,expected", [
    (1024, "bf16", 24 * GB, 5),     # 1.5 GB of buffers would hold 6: capped at the 5 measured
    (1024, "bf16", 8 * GB, 2),      # 512 MB: two objects of 240 MB
    (1024, "bf16", 4 * GB, 1),      # 256 MB: one
    (1024, "f32", 8 * GB, 1),       # 512 MB: one object of 480 MB
    (1024, "f32", 1 * GB, 1),       # never below one
    (512, "bf16", 1 * GB, 4),       # 64 MB / 15 MB
    (128, "f32", 1 * GB, 5),
])
def test_auto_batch_fits_a_sixteenth_of_memory(size, precision, memory, expected):
    assert auto_attention_batch(size, precision, memory) == expected


def test_memory_limit_is_the_cgroup_limit_when_below_the_ram(tmp_path):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert memory_limit_bytes(tmp_path) == ram  # no cgroup files
    (tmp_path / "memory.max").write_text("max\n")
    assert memory_limit_bytes(tmp_path) == ram  # v2, no limit
    (tmp_path / "memory.max").write_text(f"{2 * GB}\n")
    assert memory_limit_bytes(tmp_path) == 2 * GB
    (tmp_path / "memory.max").unlink()
    (tmp_path / "memory").mkdir()
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1, "no limit"
    assert memory_limit_bytes(tmp_path) == ram
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{3 * GB}\n")
    assert memory_limit_bytes(tmp_path) == 3 * GB


@pytest.mark.parametrize("value,expected", [(None, None), ("auto", None), (" AUTO ", None), ("", None),
                                            ("1", 1), ("3", 3)])
def test_attention_batch_setting(value, expected, tmp_path):
    env = {"MODEL_DIR": str(tmp_path)} | ({} if value is None else {"ATTENTION_BATCH": value})
    assert Settings.from_env(env).attention_batch == expected


@pytest.mark.parametrize("value", ["0", "-2", "1.5", "many"])
def test_a_bad_attention_batch_names_the_variable(value, tmp_path):
    with pytest.raises(SettingsError, match="ATTENTION_BATCH"):
        Settings.from_env({"MODEL_DIR": str(tmp_path), "ATTENTION_BATCH": value})


def test_the_engine_takes_the_automatic_batch_unless_one_is_set(model_128_f32, monkeypatch):
    from backend.engine import EngineSettings, VideoPredictor
    from backend.engine import predictor as predictor_module

    monkeypatch.setattr(predictor_module, "memory_limit_bytes", lambda: 16 * 480 * MB // 4096 * 3)  # room for 3
    auto = VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32"))
    assert auto.runtime.precision == "f32" and auto.tracker.attention_batch == 3
    assert batching.auto_attention_batch(128, "f32", 16 * 480 * MB // 4096 * 3) == 3
    fixed = VideoPredictor(EngineSettings(model_dir=model_128_f32, precision="f32", attention_batch=1),
                           runtime=auto.runtime)
    assert fixed.tracker.attention_batch == 1
