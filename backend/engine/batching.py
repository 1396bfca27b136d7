"""How many objects go in one memory-attention call when ATTENTION_BATCH is not set.

Objects in one call share the frame's own work (see `Tracker.condition`): on a 2-core AVX512-BF16 EPYC at 1024 px
with 7 memories, 3 objects took 3.58 s as one call against 3.76 s as three, 5 objects 6.12 against 6.51 s. Each
object in the call holds its own attention buffers while it runs, and OpenVINO keeps them allocated for the next
call: measured +250, +730 and +1160 MB of RSS for 1, 3 and 5 objects in one call at 1024 px (bf16), so about
`BYTES_PER_OBJECT_1024` per object. Those buffers hold key-block scores, so they grow with the square of the token
count, (image_size / 16)^2, and double in f32.

The automatic choice spends at most `MEMORY_SHARE` of the memory this process may use (the cgroup's limit in a
container, else the machine's RAM) on them, and puts at most `MAX_AUTO` objects in a call (the most measured).
"""
from __future__ import annotations

import os
from pathlib import Path

BYTES_PER_OBJECT_1024 = 240 << 20  # bf16, 1024 px (see the module docstring)
MEMORY_SHARE = 1 / 16
MAX_AUTO = 5


def attention_bytes_per_object(image_size: int, precision: str) -> int:
    """Attention buffers one object holds in a memory-attention call, bytes (image_size: model input side, px;
    precision: "bf16" or "f32", what OpenVINO runs)."""
    scale = (image_size / 1024) ** 4 * (2 if precision == "f32" else 1)
    return max(1, int(BYTES_PER_OBJECT_1024 * scale))


def auto_attention_batch(image_size: int, precision: str, memory_bytes: int) -> int:
    """Objects per memory-attention call: as many as fit in MEMORY_SHARE of `memory_bytes`, from 1 to MAX_AUTO.

    >>> auto_attention_batch(1024, "bf16", 24 << 30)   # 1.5 GB / 240 MB
    5
    >>> auto_attention_batch(1024, "bf16", 8 << 30)    # 512 MB / 240 MB
    2
    >>> auto_attention_batch(1024, "f32", 8 << 30)     # 512 MB / 480 MB
    1
    """
    per = attention_bytes_per_object(image_size, precision)
    return max(1, min(MAX_AUTO, int(memory_bytes * MEMORY_SHARE) // per))


def memory_limit_bytes(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """The memory this process may use: its cgroup's limit (v2 `memory.max`, v1 `memory.limit_in_bytes`) when one
    is set and below the machine's RAM, else the RAM."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for name in ("memory.max", "memory/memory.limit_in_bytes"):
        try:
            text = (cgroup_root / name).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < ram:
            return int(text)
    return ram
