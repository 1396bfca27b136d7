"""Memory attention against OpenVINO's own kernels, in one process and one run (interleaved repetitions).

    python benchmarks/attention.py                          # 1024 px, 7 memories + 16 pointers, bf16
    python benchmarks/attention.py --image-size 256 --reps 2 --objects 1,3 --json out.json

What it times (each repetition runs every item once, in this order, so load on a shared machine hits all alike):
- `shipped`: the exported memory-attention graph (model_export.graphs.MemoryAttentionGraph): cross-attention per
  key block (one per memory frame, one for the pointers), merged exactly;
- `flat_keys`: the same graph with one fused attention over all keys at once (what shipped before key blocks);
- `sdpa_form`: the same layers written the straightforward way (projected values, ScaledDotProductAttention,
  stack-based RoPE), i.e. the graph we shipped before; kept here as the reference form;
- `sdpa_bare`: one OpenVINO ScaledDotProductAttention op of the cross-attention shape
  (hw queries x N keys x 256, N = memories*hw + 4*pointers); the graph has 4 such layers, so "4 x sdpa_bare"
  is what the graph's cross-attentions cost if they ran at OpenVINO's own SDPA speed;
- `matmul_peak`: a 2048 x 2048 x 2048 MatMul at the same precision (the compute-bound reference).
Multi-object (`--objects`): B objects with distinct memories on one frame, as B sequential calls, one call of batch
B with the frame given once (what the engine does with ATTENTION_BATCH >= B: layer 0's frame-only work runs once),
and B calls spread over 2 infer requests of 1 thread each.

Figures: wall seconds (min and median over repetitions) and CPU seconds of this process (all threads; less
sensitive to other processes on a shared machine); GFLOP/s counts only the 4 cross-attention layers' nominal
matmul FLOPs (2 x 2 x hw x N x 256 each, the FLOPs of the SDPA form) so the forms compare on equal work.
Random-init weights: all 4 layers have identical weights (sam2 clones one layer) and OpenVINO may merge equal
work across layers; the key projections it could merge are < 1% of the graph's FLOPs.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

log = logging.getLogger("attention-bench")


def sdpa_form_module(model):
    """The memory attention as first exported: projected values, SDPA, stack-based RoPE (the 'before' form)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from model_export.graphs import rope_cos_sin

    def apply_rope(x, cos, sin):
        b, heads, n, d = x.shape
        xr = x.reshape(b, heads, -1, cos.shape[0], d // 2, 2)
        re, im = xr[..., 0], xr[..., 1]
        return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).reshape(b, heads, n, d)

    def heads(x, n):
        b, t, c = x.shape
        return x.reshape(b, t, n, c // n).transpose(1, 2)

    def merge(x):
        b, n, t, c = x.shape
        return x.transpose(1, 2).reshape(b, t, n * c)

    class SdpaForm(nn.Module):
        def __init__(self):
            super().__init__()
            self.ma = model.memory_attention
            self.grid = model.image_size // model.backbone_stride
            pos = model.image_encoder.neck.position_encoding(torch.zeros(1, model.hidden_dim, self.grid, self.grid))
            self.register_buffer("curr_pos", pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
            cos, sin = rope_cos_sin(self.ma.layers[0].self_attn, self.grid)
            self.register_buffer("cos", cos, persistent=False)
            self.register_buffer("sin", sin, persistent=False)

        def forward(self, curr, mem, mem_pos, ptr, ptr_pos):
            ma, qpos = self.ma, self.curr_pos
            out = curr + 0.1 * qpos if ma.pos_enc_at_input else curr
            for layer in ma.layers:
                t = layer.norm1(out)
                qk = t + qpos if layer.pos_enc_at_attn else t
                sa = layer.self_attn
                q = apply_rope(heads(sa.q_proj(qk), sa.num_heads), self.cos, self.sin)
                k = apply_rope(heads(sa.k_proj(qk), sa.num_heads), self.cos, self.sin)
                v = heads(sa.v_proj(t), sa.num_heads)
                out = out + sa.out_proj(merge(F.scaled_dot_product_attention(q, k, v)))
                t = layer.norm2(out)
                ca = layer.cross_attn_image
                q_in = t + qpos if layer.pos_enc_at_cross_attn_queries else t
                km = mem + mem_pos if layer.pos_enc_at_cross_attn_keys else mem
                kp = ptr + ptr_pos if layer.pos_enc_at_cross_attn_keys else ptr
                q = apply_rope(heads(ca.q_proj(q_in), ca.num_heads), self.cos, self.sin)
                k = torch.cat([apply_rope(heads(ca.k_proj(km), ca.num_heads), self.cos, self.sin),
                               heads(ca.k_proj(kp), ca.num_heads)], dim=2)
                v = torch.cat([heads(ca.v_proj(mem), ca.num_heads), heads(ca.v_proj(ptr), ca.num_heads)], dim=2)
                out = out + ca.out_proj(merge(F.scaled_dot_product_attention(q, k, v)))
                t = layer.norm3(out)
                out = out + layer.linear2(layer.activation(layer.linear1(t)))
            out = ma.norm(out)
            return out.transpose(1, 2).reshape(out.shape[0], -1, self.grid, self.grid)

    return SdpaForm()


def flat_keys_module(model):
    """The shipped graph with one fused attention over every key (no key blocks): the form before them."""
    import torch

    from model_export.graphs import MemoryAttentionGraph

    class FlatKeys(MemoryAttentionGraph):
        def _cross(self, q, km, kp, mem, ptr):
            return self._attend(q, torch.cat([km, kp], dim=1), torch.cat([mem, ptr], dim=1))
    return FlatKeys(model)


def build_graphs(image_size: int) -> tuple[dict, object]:
    """ov.Models of the forms of the memory attention (random-init SAM 2.1 tiny, seed 0)."""
    from model_export import graphs
    from model_export.build import build_video_model
    from model_export.catalog import get_model
    from model_export.convert import convert_graph, graph_specs

    model = build_video_model(get_model("sam2.1_hiera_tiny"), image_size=image_size, seed=0)
    spec = next(s for s in graph_specs() if s.name == "memory_attention")
    shipped = convert_graph(spec, model, image_size)
    old = convert_graph(spec.__class__(**{**spec.__dict__, "module": sdpa_form_module}), model, image_size)
    flat = convert_graph(spec.__class__(**{**spec.__dict__, "module": flat_keys_module}), model, image_size)
    assert spec.module is graphs.MemoryAttentionGraph
    return {"shipped": shipped, "flat_keys": flat, "sdpa_form": old}, model


def bare_models(hw: int, n_keys: int):
    import openvino as ov
    import openvino.opset13 as ops

    q = ops.parameter([1, 1, hw, 256], np.float32, name="q")
    k = ops.parameter([1, 1, n_keys, 256], np.float32, name="k")
    v = ops.parameter([1, 1, n_keys, 256], np.float32, name="v")
    sdpa = ov.Model([ops.scaled_dot_product_attention(q, k, v, causal=False)], [q, k, v], "sdpa_bare")
    a = ops.parameter([2048, 2048], np.float32, name="a")
    b = ops.parameter([2048, 2048], np.float32, name="b")
    mm = ov.Model([ops.matmul(a, b, False, False)], [a, b], "matmul_peak")
    return sdpa, mm


def timed(fn) -> tuple[float, float]:
    c0, t0 = time.process_time(), time.perf_counter()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def summary(samples: list[tuple[float, float]], flops: float | None = None) -> dict:
    wall = sorted(s[0] for s in samples)
    cpu = sorted(s[1] for s in samples)
    out = {"wall_min_s": wall[0], "wall_median_s": wall[len(wall) // 2], "cpu_min_s": cpu[0],
           "cpu_median_s": cpu[len(cpu) // 2], "reps": len(samples)}
    if flops:
        out["gflop"] = flops / 1e9
        out["gflops_wall_min"] = flops / wall[0] / 1e9
        out["gflop_per_cpu_s"] = flops / cpu[0] / 1e9
    return out


def executed_kernels(compiled) -> dict:
    """Node types of the graph the CPU plugin actually runs (get_runtime_model), counted."""
    counts: dict[str, int] = {}
    for op in compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        key = f"{rt['layerType'].astype(str) if 'layerType' in rt else op.get_type_name()}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))


def run(args) -> dict:
    import openvino as ov

    from model_export.verify import compare, random_inputs

    s, hw = args.image_size, (args.image_size // 16) ** 2
    n_keys = args.memories * hw + 4 * args.pointers
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": args.precision, "PERFORMANCE_HINT": "LATENCY"}
    if args.threads:
        cfg["INFERENCE_NUM_THREADS"] = args.threads
    t0 = time.perf_counter()
    forms, _ = build_graphs(s)
    log.info("converted both forms in %.1f s", time.perf_counter() - t0)
    sdpa, mm = bare_models(hw, n_keys)
    compiled = {k: core.compile_model(m, "CPU", cfg) for k, m in forms.items()}
    compiled["sdpa_bare"] = core.compile_model(sdpa, "CPU", cfg)
    compiled["matmul_peak"] = core.compile_model(mm, "CPU", cfg)
    reqs = {k: c.create_infer_request() for k, c in compiled.items()}
    rng = np.random.default_rng(0)
    inputs = {k: random_inputs("memory_attention", s, seed=3, n_mem=args.memories, n_ptr=4 * args.pointers)
              for k in forms}
    inputs["sdpa_bare"] = [rng.standard_normal(shp).astype(np.float32) for shp in
                           ((1, 1, hw, 256), (1, 1, n_keys, 256), (1, 1, n_keys, 256))]
    inputs["matmul_peak"] = [rng.standard_normal((2048, 2048)).astype(np.float32) for _ in range(2)]
    cross_flops = 4 * 2 * 2 * hw * n_keys * 256  # 4 layers, QK^T + AV, nominal
    flops = {"shipped": cross_flops, "flat_keys": cross_flops, "sdpa_form": cross_flops, "sdpa_bare": 2 * 2 * hw * n_keys * 256,
             "matmul_peak": 2 * 2048 ** 3}

    # agreement of the two forms (f32 when asked; at bf16 this shows the precision's own spread)
    outs = {k: reqs[k].infer(inputs[k])["conditioned"].copy() for k in forms}
    def agree(o: dict) -> dict:
        return {other: dict(zip(("max_abs", "rel", "cosine"), compare(o["shipped"], o[other])))
                for other in forms if other != "shipped"}
    agreement = {args.precision: agree(outs)}
    if args.precision != "f32":  # the exactness claim is made at f32
        agreement["f32"] = agree({k: core.compile_model(m, "CPU", dict(cfg, INFERENCE_PRECISION_HINT="f32"))(
            inputs[k])["conditioned"] for k, m in forms.items()})
    for k in ("sdpa_bare", "matmul_peak"):
        reqs[k].infer(inputs[k])
    samples: dict[str, list] = {k: [] for k in reqs}
    for _ in range(args.reps):
        for k, r in reqs.items():
            n = 5 if k == "matmul_peak" else 1
            w, c = timed(lambda: [r.infer(inputs[k]) for _ in range(n)])
            samples[k].append((w / n, c / n))
    res = {k: summary(v, flops[k]) for k, v in samples.items()}
    four = {m: 4 * res["sdpa_bare"][m] for m in ("wall_min_s", "cpu_min_s")}
    ratios = {f"{form}_vs_4x_sdpa_bare_{m.split('_')[0]}": four[m] / res[form][m]
              for form in forms for m in ("wall_min_s", "cpu_min_s")}
    for other in ("sdpa_form", "flat_keys"):
        for m in ("cpu", "wall"):
            ratios[f"shipped_vs_{other}_{m}"] = res[other][f"{m}_min_s"] / res["shipped"][f"{m}_min_s"]
    ratios["shipped_cross_gflop_per_cpu_s_vs_matmul_peak"] = (res["shipped"]["gflop_per_cpu_s"]
                                                            / res["matmul_peak"]["gflop_per_cpu_s"])
    report = {"config": {"image_size": s, "memories": args.memories, "pointers": args.pointers, "keys": n_keys,
                         "queries": hw, "precision_hint": args.precision,
                         "precision_ran": compiled["shipped"].get_property("INFERENCE_PRECISION_HINT").to_string(),
                         "threads": args.threads or "all", "reps": args.reps, "openvino": ov.get_version(),
                         "load1_start": os.getloadavg()[0]},
              "agreement_shipped_vs": agreement, "timings": res, "ratios": ratios,
              "executed_kernels": {k: executed_kernels(compiled[k]) for k in forms}}
    if args.objects:
        report["objects"] = multi_object(core, forms["shipped"], cfg, s, args)
    report["config"]["load1_end"] = os.getloadavg()[0]
    return report


def multi_object(core, model, cfg: dict, s: int, args) -> dict:
    """B objects on one frame: B sequential calls, one batch-B call (frame once), B calls over 2 one-thread requests."""
    from model_export.verify import random_inputs

    c_all = core.compile_model(model, "CPU", cfg)
    c_one = core.compile_model(model, "CPU", dict(cfg, INFERENCE_NUM_THREADS=1))
    out = {}
    for b in args.objects:
        objs = [random_inputs("memory_attention", s, seed=10 + i, n_mem=args.memories, n_ptr=4 * args.pointers)
                for i in range(b)]
        for o in objs:
            o["curr"] = objs[0]["curr"]  # one frame, B objects
        batch = {k: np.concatenate([o[k] for o in objs]) for k in objs[0] if k != "curr"}
        batch["curr"] = objs[0]["curr"]  # the frame once for all objects, as the engine calls it (ATTENTION_BATCH)
        req, reqs1 = c_all.create_infer_request(), [c_one.create_infer_request() for _ in range(2)]

        def sequential():
            for o in objs:
                req.infer(o)

        def batched():
            req.infer(batch)

        def two_requests():
            todo = list(range(b))
            lock = threading.Lock()

            def work(r):
                while True:
                    with lock:
                        if not todo:
                            return
                        i = todo.pop()
                    r.infer(objs[i])
            ts = [threading.Thread(target=work, args=(r,)) for r in reqs1]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        ways = {"sequential": sequential, "batched": batched, "two_1thread_requests": two_requests}
        for fn in ways.values():
            fn()
        samples: dict[str, list] = {k: [] for k in ways}
        for _ in range(args.reps):
            for k, fn in ways.items():
                samples[k].append(timed(fn))
        out[str(b)] = {k: summary(v) for k, v in samples.items()}
        log.info("%d objects: %s", b, {k: round(v["wall_min_s"], 2) for k, v in out[str(b)].items()})
    return out


def print_report(r: dict) -> None:
    c = r["config"]
    print(f"\nmemory attention at {c['image_size']} px, {c['memories']} memories + {c['pointers']} pointers "
          f"({c['queries']} queries x {c['keys']} keys), precision {c['precision_hint']} (OpenVINO ran "
          f"{c['precision_ran']}), OpenVINO {c['openvino']}, load1 {c['load1_start']:.1f} -> {c['load1_end']:.1f}")
    print(f"{'item':<13} {'wall min s':>10} {'wall med s':>10} {'cpu min s':>9} {'GFLOP/s wall':>12} {'GFLOP/cpu-s':>11}")
    for k, v in r["timings"].items():
        print(f"{k:<13} {v['wall_min_s']:10.3f} {v['wall_median_s']:10.3f} {v['cpu_min_s']:9.3f} "
              f"{v.get('gflops_wall_min', 0):12.1f} {v.get('gflop_per_cpu_s', 0):11.1f}")
    for k, v in r["ratios"].items():
        print(f"  {k}: {v:.2f}")
    for prec, by in r["agreement_shipped_vs"].items():
        for other, a in by.items():
            print(f"  shipped vs {other} outputs at {prec}: rel {a['rel']:.2e}, cosine {a['cosine']:.7f}")
    for k, v in r["executed_kernels"].items():
        print(f"  {k} runs: {', '.join(f'{n}x{t}' for t, n in list(v.items())[:8])}")
    for b, ways in r.get("objects", {}).items():
        print(f"  {b} objects: " + ", ".join(f"{k} {v['wall_min_s']:.2f} s wall / {v['cpu_min_s']:.2f} cpu-s"
                                              for k, v in ways.items()))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--image-size", type=int, default=1024)
    p.add_argument("--memories", type=int, default=7)
    p.add_argument("--pointers", type=int, default=16, help="object pointers (4 tokens of 64 channels each)")
    p.add_argument("--precision", default="bf16", choices=("bf16", "f32"))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--objects", type=lambda v: [int(x) for x in v.split(",") if x], default=[],
                   help="also time B objects per frame, e.g. 1,3,5")
    p.add_argument("--json", type=Path)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    report = run(args)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
