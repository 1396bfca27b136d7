"""The benchmark's figures as text: one model's table (every backend against its torch reference) and, when
several models ran, one line per model, backend and object count with ratios to the first model."""
from __future__ import annotations


def print_report(r: dict) -> None:
    m, c = r["machine"], r["config"]
    print(f"\nmachine: {m['cpu']}, {m['logical_cores']} logical / {m['physical_cores']} physical cores, "
          f"{m['ram_gb']} GB RAM, threads: {m['threads']}")
    print(f"OpenVINO {m['openvino']} (CPU capabilities {', '.join(m['ov_cpu_capabilities'])}), torch {m['torch']}")
    print(f"clip: {c['clip']} ({c['width']}x{c['height']}), {c['frames']} frames; model {c['model']} at "
          f"{c['image_size']} px ({c['weights']}); correction: clip mask of object 1 on frame {c['correction_frame']}")
    for i, (b, why) in enumerate(zip(c["boxes_xyxy"], c["box_sources"])):
        print(f"  object {i + 1}: box ({', '.join(f'{v:.0f}' for v in b)}) - {why}")
    print(f"RSS: {c['rss']}\n")
    print(f"{'backend':<12} {'precision req->OV':<18} {'load s':>7} {'warm-up s':>9} {'RSS loaded MB':>13} "
          f"{'RSS peak MB':>11} {'wall s':>7} {'load1':>5}")
    for b, d in r["backends"].items():
        p = d["precision"]
        prec = f"{p['requested']}->{p['openvino'] or 'torch f32'}" + \
            (f" x{d['attention_batch']}" if d.get("attention_batch") else "")
        print(f"{b:<12} {prec:<18} {d['load_s']:7.1f} {d['warmup_s']:9.1f} {d['rss_loaded_mb']:13.0f} "
              f"{d['rss_process_peak_mb']:11.0f} {d['wall_s']:7.1f} {d['load1_before']:5.2f}")
    tv = r["backends"].get("torch", {}).get("versions")
    if tv:
        print("torch reference ran on " + ", ".join(f"{k} {v}" for k, v in tv.items() if k != "executable"))
    print(f"\n{'phase':<16} {'backend':<12} {'frames':>6} {'prompt s':>8} {'s/frame':>8} {'FPS':>6} {'cpu s/f':>7} "
          f"{'torch/eng':>9} {'enc calls':>9} {'IoU mean':>8} {'IoU min':>8} {'RSS peak':>8} {'growth':>7}")
    phases = next(iter(r["backends"].values()))["phases"]
    for name in phases:
        for b, d in r["backends"].items():
            ph = d["phases"][name]
            v = ph.get("vs_torch")
            ratio, mean, low = (f"{v['torch_over_engine']:9.2f}", f"{v['iou_mean']:8.4f}", f"{v['iou_min']:8.4f}") \
                if v else (f"{'-':>9}", f"{'-':>8}", f"{'-':>8}")
            print(f"{name:<16} {b:<12} {ph['frames']:6d} {ph['prompt_s']:8.2f} {ph['s_per_frame']:8.3f} "
                  f"{ph['fps']:6.3f} {ph['cpu_s_per_frame']:7.3f} {ratio} {ph['encoder_calls']:9d} {mean} {low} "
                  f"{ph['rss_peak_mb']:8.0f} {ph['rss_growth_mb']:7.0f}")
    print("\ns/frame: propagation wall time; cpu s/f: its process CPU time (all threads); prompt s: session start + "
          "prompts (sam2's init_state decodes all frames, encodes frame 0).\nRSS peak / growth (MB): psutil-sampled "
          "peak of the phase, and its rise over the RSS at the phase's start. load1: load average before the backend "
          "(other work on the machine slows the wall times).")
    print(f"\nsteady state ({c.get('steady_state', '')}) and the first 8 frames, first propagation:")
    print(f"{'phase':<12} {'backend':<12} {'steady s/f':>10} {'cpu s/f':>8} {'torch/eng':>9} {'cpu ratio':>9} "
          f"{'first8 s/f':>10} {'torch/eng':>9} {'N/1 obj':>7} {'N/1 cpu':>7}")
    for name in phases:
        if not name.endswith("first"):
            continue
        for b, d in r["backends"].items():
            ph, v = d["phases"][name], d["phases"][name].get("vs_torch", {})
            if "steady_s_per_frame" not in ph:
                continue
            nobj = name.split("/")[0]
            print(f"{name:<12} {b:<12} {ph['steady_s_per_frame']:10.3f} {ph['steady_cpu_s_per_frame']:8.3f} "
                  f"{v.get('torch_over_engine_steady', float('nan')):9.2f} "
                  f"{v.get('torch_over_engine_steady_cpu', float('nan')):9.2f} {ph['first8_s_per_frame']:10.3f} "
                  f"{v.get('torch_over_engine_first8', float('nan')):9.2f} "
                  f"{d.get('objects_over_one', {}).get(nobj, float('nan')):7.2f} "
                  f"{d.get('objects_over_one_cpu', {}).get(nobj, float('nan')):7.2f}")
    for b, d in r["backends"].items():
        if "matmul_peak" not in d:
            continue
        mp = d["matmul_peak"]
        print(f"\n{b}: per graph (MatMul/conv GFLOP at the shapes run); 2048^3 MatMul peak this run: "
              f"{mp['gflops_wall']:.0f} GFLOP/s wall, {mp['gflop_per_cpu_s']:.0f} GFLOP per CPU-s")
        for name, ph in d["phases"].items():
            row = ", ".join(f"{g} {v['calls']}x {v['s']:.2f} s {v['cpu_s']:.2f} cpu-s {v['gflops']:.0f} GFLOP/s "
                            f"({100 * v['of_matmul_peak']:.0f}% wall, {100 * v['of_matmul_peak_cpu']:.0f}% cpu)"
                            for g, v in sorted(ph.get("graphs", {}).items(), key=lambda kv: -kv[1]["s"]))
            print(f"  {name:<16} {row}")
    print("\nclick latency on tracked frames (s): correction = a point added to object 1 (after a click on another"
          " frame: memory attention runs again); refine = a second point on that frame; new object = a box")
    for b, d in r["backends"].items():
        for nobj, v in d.get("clicks", {}).items():
            corr, new, ref = v["correction"], v["new_object"], v.get("refine")
            fmt = (lambda x: f"p50 {x['p50_s']:.3f} p95 {x['p95_s']:.3f} (n={x['n']})" if x else "n/a")
            print(f"  {b:<12} {nobj}: correction {fmt(corr)}; refine {fmt(ref)}; new object {fmt(new)} {v['note']}")
    cmp = [d["phases"][n]["vs_torch"] for d in r["backends"].values() for n in d["phases"]
           if "vs_torch" in d["phases"][n]]
    if cmp:
        empty = ", ".join(str(v["empty_pairs"]) for v in cmp)
        fg = ", ".join(f"{v['torch_fg_fraction']:.3f}" for v in cmp)
        print(f"IoU per frame and object; pairs with both masks empty (counted as 1), per engine row: {empty};\n"
              f"torch foreground fraction per engine row: {fg}.")


def print_cross_model(reports: dict) -> None:
    """Steady state of the first propagation, per model: s/frame, CPU s/frame, the engine's speed-up over that
    model's own torch predictor, and each figure over the first model's (same backend, same run, same frames)."""
    names = list(reports)
    base = reports[names[0]]["backends"]
    print(f"\nmodels compared (same clip and frames, each engine against its own torch predictor; ratios to {names[0]}):")
    print(f"{'model':<20} {'backend':<12} {'objects':>7} {'steady s/f':>10} {'cpu s/f':>8} {'torch/eng':>9} "
          f"{'vs first':>8} {'cpu vs first':>12}")
    for name in names:
        for b, d in reports[name]["backends"].items():
            for phase, ph in d["phases"].items():
                if not phase.endswith("first") or "steady_s_per_frame" not in ph:
                    continue
                ref = base.get(b, {}).get("phases", {}).get(phase, {})
                vs = ph.get("vs_torch", {}).get("torch_over_engine_steady", float("nan"))
                rel = ph["steady_s_per_frame"] / ref["steady_s_per_frame"] if "steady_s_per_frame" in ref else float("nan")
                rel_c = (ph["steady_cpu_s_per_frame"] / ref["steady_cpu_s_per_frame"]
                         if "steady_cpu_s_per_frame" in ref else float("nan"))
                print(f"{name:<20} {b:<12} {phase.split('/')[0]:>7} {ph['steady_s_per_frame']:10.3f} "
                      f"{ph['steady_cpu_s_per_frame']:8.3f} {vs:9.2f} {rel:8.2f} {rel_c:12.2f}")
