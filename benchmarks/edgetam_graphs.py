"""EdgeTAM per-graph cost: OpenVINO f32 / bf16 against EdgeTAM's PyTorch modules, same inputs, same process.

    .venv-edgetam/bin/python benchmarks/edgetam_graphs.py                    # 1024 px, 1/4/7 memories
    .venv-edgetam/bin/python benchmarks/edgetam_graphs.py --image-size 512 --reps 3 --json out.json

Random weights (`--random-init` seed 0). Graphs are traced in memory with model_export's own code (the
graphs `python -m model_export --model edgetam` writes) and compiled with INFERENCE_PRECISION_HINT f32
or bf16 (f32-stored weights; the shipped bf16 export stores fp16 weights, which changes load size, not
compute). Torch is `forward_image` and EdgeTAM's complex-RoPE `MemoryAttention`, f32, no autocast.
Memory attention is timed at n memory frames of 512 tokens each plus 4 tokens per pointer for n
pointers (one object). Each figure is the median of --reps runs after one warm-up: wall seconds and
process CPU seconds (user+sys; on a shared machine CPU seconds move less than wall time). Ratios are
torch / OpenVINO in this run. Say which CPU and how loaded it was when you quote them.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # model_export (also the hydra target of the backbone)
log = logging.getLogger("edgetam_graphs")


def timed(fn, reps: int) -> tuple[float, float]:
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--memories", type=int, nargs="+", default=[1, 4, 7])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="0 = all cores")
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    import openvino as ov

    from model_export import edgetam, verify
    from model_export.build import build_video_model
    from model_export.catalog import get_model
    from model_export.convert import convert_graph

    if args.threads:
        torch.set_num_threads(args.threads)
    s = args.image_size
    model = build_video_model(get_model("edgetam"), image_size=s, seed=0)
    specs = {g.name: g for g in edgetam.graph_specs(model)}
    oracle = edgetam.Oracle(model)
    inputs_for = edgetam.random_inputs(model)
    core = ov.Core()
    rows, converted = [], {}

    def bench(graph: str, case: str, inputs: dict):
        if graph not in converted:
            converted[graph] = convert_graph(specs[graph], model, s)
        ov_model = converted[graph]
        ref = getattr(oracle, graph)
        t_torch = timed(lambda: ref(**inputs), args.reps)
        row = {"graph": graph, "case": case, "torch_s": t_torch[0], "torch_cpu_s": t_torch[1]}
        for hint in ("f32", "bf16"):
            cfg = {"INFERENCE_PRECISION_HINT": hint}
            if args.threads:
                cfg["INFERENCE_NUM_THREADS"] = args.threads
            compiled = core.compile_model(ov_model, "CPU", cfg)
            req = compiled.create_infer_request()
            t = timed(lambda: req.infer(inputs), args.reps)
            row[f"ov_{hint}_s"], row[f"ov_{hint}_cpu_s"] = t
            got = req.get_output_tensor(0).data
            first = next(iter(ref(**inputs).values()))
            row[f"ov_{hint}_cos"] = verify.compare(got, first)[2]
        rows.append(row)
        log.info("%s", json.dumps(row))

    bench("image_encoder", "1 frame", inputs_for("image_encoder", s, 0))
    for n in args.memories:
        bench("memory_attention", f"{n} mem + {n} ptr", inputs_for("memory_attention", s, n, n_mem=n, n_ptr=4 * n))

    print(f"\nEdgeTAM, random weights, {s} px, median of {args.reps}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'graph':17s} {'case':16s} {'torch s':>8s} {'ov f32 s':>9s} {'ov bf16 s':>9s} {'torch/f32':>9s} "
          f"{'torch/bf16':>10s} {'cpu-s torch/f32/bf16':>22s} {'cos bf16':>9s}")
    for r in rows:
        print(f"{r['graph']:17s} {r['case']:16s} {r['torch_s']:8.3f} {r['ov_f32_s']:9.3f} {r['ov_bf16_s']:9.3f} "
              f"{r['torch_s'] / r['ov_f32_s']:9.2f} {r['torch_s'] / r['ov_bf16_s']:10.2f} "
              f"{r['torch_cpu_s']:7.2f}/{r['ov_f32_cpu_s']:6.2f}/{r['ov_bf16_cpu_s']:6.2f} {r['ov_bf16_cos']:9.6f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"image_size": s, "reps": args.reps, "loadavg_end": os.getloadavg(), "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
