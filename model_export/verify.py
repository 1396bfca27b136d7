"""Check exported IR against sam2's own PyTorch code paths on identical inputs.

References are computed through sam2's modules (`forward_image`, the prompt
encoder and mask decoder, `_encode_new_memory`, the original complex-RoPE
`MemoryAttention`, `_use_mask_as_output`), not through the export wrappers,
so a wrapper that drifts from sam2 is caught too.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

F32_MAX_REL = 1e-4       # f32 IR: worst |ov - torch| / max|torch|
LOW_PRECISION_MIN_COS = {"bf16": 0.999, "int8-weights": 0.99}
DEFAULT_MEMORY_SIZES = ((1, 0), (2, 4), (7, 64))  # (memory frames, pointer tokens)


@dataclass(frozen=True)
class Comparison:
    graph: str
    case: str
    output: str
    max_abs: float
    rel: float
    cosine: float
    ok: bool

    def row(self) -> str:
        flag = "ok" if self.ok else "FAIL"
        return f"{self.graph:17s} {self.case:14s} {self.output:20s} max|d| {self.max_abs:9.3g}  rel {self.rel:9.3g}  cos {self.cosine:.7f}  {flag}"


def compare(ov_out: np.ndarray, ref: np.ndarray) -> tuple[float, float, float]:
    """(max abs difference, that divided by max |ref|, cosine similarity) of two arrays of equal shape."""
    a = np.asarray(ov_out, dtype=np.float64).ravel()
    b = np.asarray(ref, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {np.shape(ov_out)} vs {np.shape(ref)}")
    d = float(np.abs(a - b).max()) if a.size else 0.0
    scale = float(np.abs(b).max()) if b.size else 0.0
    rel = d / scale if scale > 0 else d
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    cos = float(a @ b / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    return d, rel, cos


def _passes(precision: str, rel: float, cos: float) -> bool:
    if precision == "f32":
        return rel <= F32_MAX_REL
    return cos >= LOW_PRECISION_MIN_COS[precision]


class Oracle:
    """sam2 reference outputs for each graph, given the graph's own inputs (numpy in, numpy out)."""

    def __init__(self, model):
        self.m = model
        self.s = model.image_size
        self.grid = model.image_size // model.backbone_stride
        self._pos = None

    def curr_pos(self) -> torch.Tensor:
        """The frame position encoding sam2 passes to memory attention, [hw, 1, 256]."""
        if self._pos is None:
            with torch.no_grad():
                out = self.m.forward_image(torch.zeros(1, 3, self.s, self.s))
            self._pos = out["vision_pos_enc"][-1].flatten(2).permute(2, 0, 1)
        return self._pos

    @torch.no_grad()
    def image_encoder(self, image):
        fpn = self.m.forward_image(torch.from_numpy(image))["backbone_fpn"]
        return {"hr0": fpn[0].numpy(), "hr1": fpn[1].numpy(), "feat": fpn[2].numpy()}

    @torch.no_grad()
    def prompt_decoder(self, image_embed, hr0, hr1, point_coords, point_labels, mask_input, has_mask_input):
        pe, dec, t = self.m.sam_prompt_encoder, self.m.sam_mask_decoder, torch.from_numpy
        rows = []
        for i in range(image_embed.shape[0]):
            sparse, dense = pe(points=(t(point_coords[i:i + 1]), t(point_labels[i:i + 1])), boxes=None,
                               masks=t(mask_input[i:i + 1]) if has_mask_input[i] > 0.5 else None)
            masks, iou, tokens, score = dec.predict_masks(
                image_embeddings=t(image_embed[i:i + 1]), image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, repeat_image=False,
                high_res_features=[t(hr0[min(i, len(hr0) - 1)][None]), t(hr1[min(i, len(hr1) - 1)][None])])
            rows.append((masks, iou, self.m.obj_ptr_proj(tokens), score))
        names = ("low_res_masks", "iou_scores", "obj_ptrs", "object_score_logits")
        return {n: torch.cat([r[k] for r in rows]).numpy() for k, n in enumerate(names)}

    @torch.no_grad()
    def memory_encoder(self, pix_feat, mask_logits, binarize, object_score_logits):
        t = torch.from_numpy
        rows = []
        for i in range(mask_logits.shape[0]):
            feats = [t(pix_feat[min(i, len(pix_feat) - 1)][None]).flatten(2).permute(2, 0, 1)]
            hr = F.interpolate(t(mask_logits[i:i + 1]), size=(self.s, self.s), mode="bilinear", align_corners=False)
            mem, _ = self.m._encode_new_memory(
                current_vision_feats=feats, feat_sizes=[(self.grid, self.grid)], pred_masks_high_res=hr,
                object_score_logits=t(object_score_logits[i:i + 1]), is_mask_from_pts=bool(binarize[i] > 0.5))
            rows.append(mem)
        return {"maskmem_features": torch.cat(rows).numpy()}

    @torch.no_grad()
    def memory_attention(self, curr, mem, mem_pos, ptr, ptr_pos):
        t = torch.from_numpy
        b = curr.shape[0]
        out = self.m.memory_attention(
            curr=[t(curr).transpose(0, 1)], curr_pos=[self.curr_pos().expand(-1, b, -1)],
            memory=torch.cat([t(mem), t(ptr)], dim=1).transpose(0, 1),
            memory_pos=torch.cat([t(mem_pos), t(ptr_pos)], dim=1).transpose(0, 1),
            num_obj_ptr_tokens=ptr.shape[1])
        return {"conditioned": out.permute(1, 2, 0).reshape(b, -1, self.grid, self.grid).numpy()}

    @torch.no_grad()
    def mask_prompt(self, mask):
        m = torch.from_numpy(mask)
        if m.shape[-2:] != (self.s, self.s):  # as SAM2VideoPredictor.add_new_mask
            m = F.interpolate(m, size=(self.s, self.s), mode="bilinear", align_corners=False, antialias=True)
            m = (m >= 0.5).float()
        g = self.grid
        feat = torch.zeros(1, self.m.hidden_dim, g, g)
        hr = [torch.zeros(1, 32, 4 * g, 4 * g), torch.zeros(1, 64, 2 * g, 2 * g)]
        low = self.m._use_mask_as_output(feat, hr, m)[0]
        return {"low_res_logits": low.numpy(), "mask_for_decoder": self.m.mask_downsample(m).numpy(),
                "mask_pixels": m.flatten(1).sum(1).numpy()}


def random_inputs(graph: str, s: int, seed: int, n_mem: int = 2, n_ptr: int = 8) -> dict[str, np.ndarray]:
    """Deterministic test inputs for one graph at model input side `s`."""
    rng = np.random.default_rng(seed)
    g = s // 16

    def rn(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    if graph == "image_encoder":
        return {"image": rn(1, 3, s, s)}
    if graph == "prompt_decoder":
        return {"image_embed": rn(2, 256, g, g), "hr0": rn(1, 32, 4 * g, 4 * g), "hr1": rn(1, 64, 2 * g, 2 * g),
                "point_coords": (rng.random((2, 3, 2)) * s).astype(np.float32),
                "point_labels": np.array([[2, 3, 0], [1, 0, -1]], np.int32),
                "mask_input": rn(2, 1, 4 * g, 4 * g, scale=8.0), "has_mask_input": np.array([1.0, 0.0], np.float32)}
    if graph == "memory_encoder":
        return {"pix_feat": rn(1, 256, g, g), "mask_logits": rn(2, 1, 4 * g, 4 * g, scale=8.0),
                "binarize": np.array([1.0, 0.0], np.float32), "object_score_logits": np.array([[2.0], [-3.0]], np.float32)}
    if graph == "memory_attention":
        return {"curr": rn(1, g * g, 256), "mem": rn(1, n_mem * g * g, 64), "mem_pos": rn(1, n_mem * g * g, 64),
                "ptr": rn(1, n_ptr, 64), "ptr_pos": rn(1, n_ptr, 64)}
    if graph == "mask_prompt":
        mask = np.zeros((1, 1, 3 * g * 2, 5 * g * 2), np.float32)
        mask[..., g:4 * g, 2 * g:7 * g] = 1.0
        return {"mask": mask}
    raise ValueError(graph)


def verify_export(model, out_dir: Path, precision: str, *, threads: int = 0,
                  memory_sizes=DEFAULT_MEMORY_SIZES, seed: int = 0) -> list[Comparison]:
    """Run every IR in `out_dir` and sam2 on the same inputs; one Comparison per output and case."""
    import openvino as ov

    core = ov.Core()
    hint = "f32" if precision == "f32" else "bf16"
    cfg = {"INFERENCE_PRECISION_HINT": hint}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = threads
    oracle, inputs_for = Oracle(model), random_inputs
    if getattr(model, "spatial_perceiver", None) is not None:  # EdgeTAM: token memories
        from . import edgetam
        oracle, inputs_for = edgetam.Oracle(model), edgetam.random_inputs(model)
    s = model.image_size
    if model.binarize_mask_from_pts_for_mem_enc is False:
        log.info("model does not binarize prompted masks; memory encoder checked with sigmoid only")
    cases: list[tuple[str, str, dict]] = [(g, "random", inputs_for(g, s, seed)) for g in
                                          ("image_encoder", "prompt_decoder", "memory_encoder", "mask_prompt")]
    cases += [("memory_attention", f"{n}mem+{p}ptr", inputs_for("memory_attention", s, seed + n * 100 + p, n, p))
              for n, p in memory_sizes]
    results = []
    compiled = {}
    for graph, case, inputs in cases:
        if graph == "memory_encoder" and not model.binarize_mask_from_pts_for_mem_enc:
            inputs["binarize"][:] = 0.0
        if graph not in compiled:
            compiled[graph] = core.compile_model(str(Path(out_dir) / f"{graph}.xml"), "CPU", cfg)
        got = compiled[graph](inputs)
        ref = getattr(oracle, graph)(**inputs)
        for name, r in ref.items():
            d, rel, cos = compare(got[name], r)
            results.append(Comparison(graph, case, name, d, rel, cos, _passes(precision, rel, cos)))
    return results
