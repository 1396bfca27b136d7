"""Does a memory-attention graph survive a run cancelled mid-graph? OpenVINO 2026.4.1 says no for the key-blocked one.

    python benchmarks/cancel_safety.py MODEL_DIR [--image-size 128]

For a few (memories before, memories after, cancel delay) cases, on one infer request: start a run with the first
shapes, cancel it after the delay, then run the second shapes (a) on that request, (b) on a request of a freshly
compiled model, and compare with a clean run. The outcome depends on where the cancel lands: run it a few times. Prints ok / WRONG / ERROR per case and mode. What `backend.engine.runtime.Runtime._recompile` is for.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CASES = [(5, 7, 0.05), (7, 5, 0.2), (3, 7, 0.1), (7, 2, 0.4), (6, 7, 0.3), (1, 7, 0.01), (7, 7, 0.2), (4, 6, 0.02)]


def main(argv=None) -> int:
    import openvino as ov

    from model_export.verify import random_inputs
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--precision", default="bf16")
    args = p.parse_args(argv)
    core = ov.Core()
    xml = str(args.model_dir / "memory_attention.xml")
    cfg = {"INFERENCE_PRECISION_HINT": args.precision}

    def inputs(n):
        return random_inputs("memory_attention", args.image_size, seed=n, n_mem=n, n_ptr=4 * n)
    clean = core.compile_model(xml, "CPU", cfg)
    failures = {}
    for mode in ("same compiled model", "recompiled"):
        compiled = core.compile_model(xml, "CPU", cfg)
        req = compiled.create_infer_request()
        bad = 0
        for before, after, delay in CASES:
            req.start_async(inputs(before))
            time.sleep(delay)
            req.cancel()
            try:
                req.wait()
            except RuntimeError:
                pass  # cancelled
            if mode == "recompiled":
                compiled = core.compile_model(xml, "CPU", cfg)
                req = compiled.create_infer_request()
            try:
                req.infer(inputs(after))
                got = req.get_output_tensor(0).data.copy()
                want = clean.create_infer_request().infer(inputs(after))[0]
                verdict = "ok" if np.isfinite(got).all() and np.array_equal(got, want) else "WRONG"
            except RuntimeError as e:
                verdict = "ERROR " + " ".join(str(e).split())[-160:]
            bad += verdict != "ok"
            print(f"{mode:<20} {before} -> {after} memories, cancel after {delay * 1000:.0f} ms: {verdict}")
        failures[mode] = bad
    print({k: f"{v} of {len(CASES)} cases failed" for k, v in failures.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
