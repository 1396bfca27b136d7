"""What is EdgeTAM-specific in the export: its backbone, memory encoder + perceiver, memory attention.

EdgeTAM (Meta, Apache-2.0) is SAM 2 with a RepViT-M1 image encoder (timm), a
2D spatial perceiver that compresses each memory frame to a set of tokens, and
2 memory-attention layers whose cross-attention rotates queries on the
S/16 x S/16 grid and keys on the perceiver's 16 x 16 latent grid. Prompt
encoder, mask decoder and mask prompt are SAM 2's and export through
`graphs.py` unchanged. This module runs only in the EdgeTAM export venv
(`scripts/install_edgetam_export.sh`), whose `sam2` is the `edgetam-dimos` fork.

Memory layout: one memory frame is T = num_latents + num_latents_2d tokens of
mem_dim channels ([B, T, 64], T = 512 for the official config), not a
[B, 64, h, w] map. The first num_latents tokens (global latents) carry no
position (zero encoding, no RoPE); the last num_latents_2d tokens (one per
cell of a 16 x 16 window grid) have a sine position encoding and are rotated
with the key RoPE table. Object pointers come after all frames, as for SAM 2.1.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import types

import torch
import torch.nn as nn

from . import graphs
from .verify import Oracle as _BaseOracle

log = logging.getLogger(__name__)

CONFIG = "configs/edgetam.yaml"
MEMORY_FORMAT_VERSION = 2  # token memories: an engine reading format 1 must refuse the export, not misread it


def _require_fork() -> str:
    """Version of edgetam-dimos, or a ValueError (the CLI prints it) that says which venv to use."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("edgetam-dimos")
    except PackageNotFoundError:
        raise ValueError("--model edgetam needs the EdgeTAM export venv (its `sam2` is the edgetam-dimos fork): run "
                         "`bash scripts/install_edgetam_export.sh`, then .venv-edgetam/bin/python -m model_export ...") from None


def check_environment() -> str:
    """One line describing this venv's EdgeTAM export stack; raises if the fork or timm is missing."""
    from importlib.metadata import version

    fork = _require_fork()
    _import_timm()
    return f"EdgeTAM export environment ok: edgetam-dimos {fork}, timm {version('timm')}, torch {torch.__version__}"


def _import_timm():
    """Import timm on a CPU-only torch.

    timm (every release that has RepViT) imports torchvision's Python modules at
    import time (`torchvision.ops.misc.FrozenBatchNorm2d`, `torchvision.transforms`).
    PyPI's torchvision x86 wheels link CUDA libtorch, so their C++ ops do not load
    against the CPU torch, and torchvision 0.28's `_meta_registrations` then fails
    with "operator torchvision::nms does not exist" because it registers fake
    kernels for nms/qnms without checking that the ops loaded. Declaring those two
    schemas (no kernel) lets the import finish; nothing here calls a torchvision op,
    and a call would fail loudly ("no kernel for CPU"), never compute silently.
    Tried and rejected: timm < 1.0 (its timm.data imports torchvision too), the
    PyTorch CPU wheel index (unreachable here), PyPI's CUDA torch (GBs of CUDA).
    """
    try:
        import torchvision  # noqa: F401
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_timm.lib = lib  # keep the fragment alive
        import torchvision  # noqa: F401,F811
        log.info("torchvision %s imported without its C++ ops (CUDA wheel on a CPU torch); timm needs only its Python code",
                 torchvision.__version__)
    import timm

    return timm


class OfflineTimmBackbone(nn.Module):
    """EdgeTAM's `TimmBackbone` built with pretrained=False: same modules and state-dict keys (`body.*`).

    The upstream class calls `timm.create_model(..., pretrained=True)`, which
    downloads ImageNet weights; the export either loads EdgeTAM's checkpoint over
    them or wants random weights, so the download is never useful.
    """

    def __init__(self, name: str, features):
        super().__init__()
        timm = _import_timm()
        out_indices = tuple(int(f[len("layer"):]) for f in features)
        self.body = timm.create_model(name, pretrained=False, in_chans=3, features_only=True, out_indices=out_indices)
        self.channel_list = self.body.feature_info.channels()[::-1]

    def forward(self, x):
        return list(self.body(x))


def check_image_size(image_size: int) -> int:
    """RepViT downsamples by 32 and the perceiver splits the S/16 grid into 16 x 16 windows: S % 256 == 0."""
    if image_size % 256 or image_size < 256:
        raise ValueError(f"--image-size for EdgeTAM must be a multiple of 256 (got {image_size}): the spatial perceiver "
                         f"pools the S/16 feature grid into 16 x 16 windows; 1024 is what EdgeTAM was trained at")
    return image_size


def hydra_overrides(image_size: int) -> list[str]:
    """Config overrides: offline backbone, input size, and the RoPE grids that follow the feature map."""
    grid = check_image_size(image_size) // 16
    _require_fork()
    return [
        f"++model.image_encoder.trunk._target_={OfflineTimmBackbone.__module__}.{OfflineTimmBackbone.__qualname__}",
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.q_sizes=[{grid},{grid}]",
    ]


# ---------------------------------------------------------------- graphs


def memory_layout(model) -> dict:
    """Token counts of one memory frame, read from the built perceiver and cross-attention."""
    p = model.spatial_perceiver
    ca = model.memory_attention.layers[0].cross_attn_image
    n1, n2 = max(int(p.num_latents), 0), max(int(p.num_latents_2d), 0)
    k_rows = int(ca.freqs_cis_k.shape[0])
    if n2 != k_rows:
        raise ValueError(f"perceiver has {n2} 2D latents but cross-attention keys rotate {k_rows} positions")
    return {"tokens_per_frame": n1 + n2, "global_tokens": n1, "grid_tokens": n2,
            "grid_side": int(math.isqrt(n2)), "token_dim": int(model.mem_dim)}


def _sine_pos(model, grid: int) -> torch.Tensor:
    return model.memory_encoder.position_encoding(torch.zeros(1, model.mem_dim, grid, grid))


class MemoryEncoderGraph(nn.Module):
    """SAM 2's memory encoder (`graphs.MemoryEncoderGraph`) followed by EdgeTAM's spatial perceiver.

    Inputs as for SAM 2.1; output maskmem_features [B, T, mem_dim] tokens. Their
    position encoding does not depend on the input and is stored in
    constants.npz (`maskmem_pos_enc`, [T, mem_dim]).
    """

    def __init__(self, model):
        super().__init__()
        self.encoder = graphs.MemoryEncoderGraph(model)
        self.perceiver = model.spatial_perceiver
        grid = model.image_size // model.backbone_stride
        self.register_buffer("pos", _sine_pos(model, grid), persistent=False)

    def forward(self, pix_feat, mask_logits, binarize, object_score_logits):
        feats = self.encoder(pix_feat, mask_logits, binarize, object_score_logits)
        return perceive(self.perceiver, feats, self.pos)


def perceive(p, x, pos):
    """`PerceiverResampler.forward` for any batch: x [B, C, H, W], pos [1, C, H, W] -> tokens [B, T, C].

    Same modules and order as upstream (global latents first, then one latent
    per window of the 2D grid, row-major); upstream's `expand(B, ...).view(...)`
    only works for B == 1, so this uses reshape.
    """
    b, c, h, w = x.shape
    out = []
    if p.num_latents > 0:
        lat = p.latents.unsqueeze(0).expand(b, -1, -1)
        xs = x.permute(0, 2, 3, 1).flatten(1, 2)
        ps = pos.expand(b, -1, -1, -1).permute(0, 2, 3, 1).flatten(1, 2)
        for layer in p.layers:
            lat = layer(lat, xs, ps)
        out.append(p.norm(lat))
    if p.num_latents_2d > 0:
        n = math.isqrt(p.num_latents_2d)
        ws = h // n
        lat = p.latents_2d.unsqueeze(0).expand(b, -1, -1).reshape(-1, 1, c)
        win = x.permute(0, 2, 3, 1).reshape(b, n, ws, n, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        for layer in p.layers:
            lat = layer(lat, win)
        out.append(p.norm(lat.reshape(b, n * n, c)))
    return torch.cat(out, dim=1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs (x[2i], x[2i+1]) of x [B, heads, r*L, D] by a table of L positions (sam2's complex
    `apply_rotary_enc` in real numbers, so it converts; r, the number of memory frames, stays dynamic)."""
    b, h, n, d = x.shape
    xr = x.reshape(b, h, -1, cos.shape[0], d // 2, 2)
    re, im = xr[..., 0], xr[..., 1]
    return torch.stack([re * cos - im * sin, re * sin + im * cos], dim=-1).reshape(b, h, n, d)


def _heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """[B, T, C] -> [B, n, T, C/n]."""
    b, t, c = x.shape
    return x.reshape(b, t, n, c // n).transpose(1, 2)


def _merge(x: torch.Tensor) -> torch.Tensor:
    """[B, n, T, c] -> [B, T, n*c]."""
    b, n, t, c = x.shape
    return x.transpose(1, 2).reshape(b, t, n * c)


class MemoryAttentionGraph(nn.Module):
    """EdgeTAM's MemoryAttention with real-valued RoPE; spatial memories are token sets.

    curr [B,hw,256]; mem/mem_pos [B, n*T, 64] (n memory frames of T tokens, with
    spatial + temporal encodings); ptr/ptr_pos [B, p, 64]. Differences from
    SAM 2.1: the cross-attention (RoPEAttentionv2) rotates queries with the
    hw-grid table and, within each memory frame, only the last `grid_tokens`
    keys, with the perceiver's 16 x 16 table; the global latents and the
    pointers are not rotated.
    """

    def __init__(self, model):
        super().__init__()
        self.ma = model.memory_attention
        self.grid = model.image_size // model.backbone_stride
        lay = memory_layout(model)
        self.tokens, self.plain = lay["tokens_per_frame"], lay["global_tokens"]
        pos = model.image_encoder.neck.position_encoding(torch.zeros(1, model.hidden_dim, self.grid, self.grid))
        self.register_buffer("curr_pos", pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        cos, sin = graphs.rope_cos_sin(self.ma.layers[0].self_attn, self.grid)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        ca = self.ma.layers[0].cross_attn_image
        if ca.freqs_cis_q.shape[0] != self.grid ** 2:
            raise ValueError(f"cross-attention q_sizes give {ca.freqs_cis_q.shape[0]} positions, feature grid has {self.grid ** 2}")
        for name, cis in (("q", ca.freqs_cis_q), ("k", ca.freqs_cis_k)):
            self.register_buffer(f"cos_{name}", cis.real.float().contiguous(), persistent=False)
            self.register_buffer(f"sin_{name}", cis.imag.float().contiguous(), persistent=False)

    def _rope_memory_keys(self, k):
        """Rotate the grid tokens of every frame in k [B, heads, n*T, D]; global latents stay as they are."""
        b, h, nt, d = k.shape
        k5 = k.reshape(b, h, -1, self.tokens, d)
        rot = apply_rope(k5[:, :, :, self.plain:].reshape(b, h, -1, d), self.cos_k, self.sin_k)
        return torch.cat([k5[:, :, :, :self.plain], rot.reshape(b, h, -1, self.tokens - self.plain, d)], dim=3).reshape(b, h, nt, d)

    def forward(self, curr, mem, mem_pos, ptr, ptr_pos):
        heads, merge = _heads, _merge
        sdpa = torch.nn.functional.scaled_dot_product_attention
        ma, qpos = self.ma, self.curr_pos
        out = curr + 0.1 * qpos if ma.pos_enc_at_input else curr
        for layer in ma.layers:
            t = layer.norm1(out)
            qk = t + qpos if layer.pos_enc_at_attn else t
            sa = layer.self_attn
            q = apply_rope(heads(sa.q_proj(qk), sa.num_heads), self.cos, self.sin)
            k = apply_rope(heads(sa.k_proj(qk), sa.num_heads), self.cos, self.sin)
            v = heads(sa.v_proj(t), sa.num_heads)
            out = out + sa.out_proj(merge(sdpa(q, k, v)))
            t = layer.norm2(out)
            ca = layer.cross_attn_image
            q_in = t + qpos if layer.pos_enc_at_cross_attn_queries else t
            km = mem + mem_pos if layer.pos_enc_at_cross_attn_keys else mem
            kp = ptr + ptr_pos if layer.pos_enc_at_cross_attn_keys else ptr
            q = apply_rope(heads(ca.q_proj(q_in), ca.num_heads), self.cos_q, self.sin_q)
            k = torch.cat([self._rope_memory_keys(heads(ca.k_proj(km), ca.num_heads)),
                           heads(ca.k_proj(kp), ca.num_heads)], dim=2)
            v = torch.cat([heads(ca.v_proj(mem), ca.num_heads), heads(ca.v_proj(ptr), ca.num_heads)], dim=2)
            out = out + ca.out_proj(merge(sdpa(q, k, v)))
            t = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(t)))
        out = ma.norm(out)
        return out.transpose(1, 2).reshape(out.shape[0], -1, self.grid, self.grid)


def _embed_points_where(pe, points, labels, pad: bool):
    """EdgeTAM's `PromptEncoder._embed_points` with torch.where instead of in-place boolean indexing.

    Same arithmetic (sam2 1.1.0 made the same rewrite); the fork's
    `x[labels == k] += w` traces to an index_put_ that OpenVINO cannot convert.
    """
    points = points + 0.5
    if pad:
        points = torch.cat([points, torch.zeros((points.shape[0], 1, 2), device=points.device)], dim=1)
        labels = torch.cat([labels, -torch.ones((labels.shape[0], 1), device=labels.device)], dim=1)
    emb = pe.pe_layer.forward_with_coords(points, pe.input_image_size)
    emb = torch.where((labels == -1).unsqueeze(-1), torch.zeros_like(emb) + pe.not_a_point_embed.weight, emb)
    for k in range(4):
        emb = torch.where((labels == k).unsqueeze(-1), emb + pe.point_embeddings[k].weight, emb)
    return emb


class PromptDecoderGraph(graphs.PromptDecoderGraph):
    """SAM 2's prompt decoder graph; only point embedding is swapped, for the duration of the trace."""

    def forward(self, image_embed, hr0, hr1, point_coords, point_labels, mask_input, has_mask_input):
        pe = self.model.sam_prompt_encoder
        pe._embed_points = types.MethodType(_embed_points_where, pe)  # instance attribute: the oracle keeps the original
        try:
            return super().forward(image_embed, hr0, hr1, point_coords, point_labels, mask_input, has_mask_input)
        finally:
            del pe._embed_points


def graph_specs(model) -> list:
    """SAM 2.1's graph specs with EdgeTAM's prompt decoder, memory encoder and memory attention swapped in.

    The two memory graphs are spelled out in full (not derived from convert.py's) so that changes
    to SAM 2.1's memory-attention interface do not silently change EdgeTAM's.
    """
    from .convert import GraphSpec
    from .convert import graph_specs as base_specs

    t = memory_layout(model)["tokens_per_frame"]

    def rn(g, *shape):
        return torch.randn(*shape, generator=g)

    ours = {
        "memory_encoder": GraphSpec(
            "memory_encoder", MemoryEncoderGraph,
            ("pix_feat", "mask_logits", "binarize", "object_score_logits"), ("maskmem_features",),
            lambda s, g: {"pix_feat": rn(g, 1, 256, s // 16, s // 16), "mask_logits": rn(g, 2, 1, s // 4, s // 4) * 8,
                          "binarize": torch.tensor([1.0, 0.0]), "object_score_logits": torch.tensor([[1.0], [-1.0]])},
            lambda s: [[-1, 256, s // 16, s // 16], [-1, 1, s // 4, s // 4], [-1], [-1, 1]],
        ),
        "memory_attention": GraphSpec(
            "memory_attention", MemoryAttentionGraph,
            ("curr", "mem", "mem_pos", "ptr", "ptr_pos"), ("conditioned",),
            lambda s, g: {"curr": rn(g, 2, (s // 16) ** 2, 256), "mem": rn(g, 2, 2 * t, 64),
                          "mem_pos": rn(g, 2, 2 * t, 64), "ptr": rn(g, 2, 8, 64), "ptr_pos": rn(g, 2, 8, 64)},
            lambda s: [[-1, (s // 16) ** 2, 256], [-1, -1, 64], [-1, -1, 64], [-1, -1, 64], [-1, -1, 64]],
        ),
    }
    out = []
    for gs in base_specs():
        if gs.name == "prompt_decoder":
            gs = dataclasses.replace(gs, module=PromptDecoderGraph)
        out.append(ours.get(gs.name, gs))
    return out


# ---------------------------------------------------------------- constants and manifest


def tracker_constants(model) -> dict:
    """SAM 2.1's constants, with `maskmem_pos_enc` as the perceiver's token encoding [T, mem_dim]."""
    import numpy as np

    from .manifest import tracker_constants as base

    c = base(model)
    grid = model.image_size // model.backbone_stride
    with torch.no_grad():
        _, pos = model.spatial_perceiver(torch.zeros(1, model.mem_dim, grid, grid), _sine_pos(model, grid))
    c["maskmem_pos_enc"] = pos[0].float().numpy().astype(np.float32).copy()
    return c


def manifest_fields(model) -> dict:
    """Manifest entries that tell the engine memories are token sets, and how the memory attention reads them."""
    grid = model.image_size // model.backbone_stride
    ma = model.memory_attention
    ca = ma.layers[0].cross_attn_image
    lay = memory_layout(model)
    return {
        "format_version": MEMORY_FORMAT_VERSION,
        "family": "edgetam",
        "memory": {
            "layout": "tokens",
            **lay,
            "pos_enc": "constants.npz maskmem_pos_enc [tokens_per_frame, token_dim]: zeros for the global tokens, "
                       "2D sine of the latent grid for the grid tokens; add maskmem_tpos_enc[t] as for SAM 2.1",
            "maskmem_features_shape": [-1, lay["tokens_per_frame"], lay["token_dim"]],
        },
        "memory_attention": {
            "num_layers": len(ma.layers),
            "query_grid": [grid, grid],
            "key_rope_grid": [lay["grid_side"], lay["grid_side"]],
            "key_rope_tokens": "the last grid_tokens of each memory frame; global tokens and object pointers unrotated",
            "num_heads": int(ca.num_heads),
            "kv_in_dim": int(ca.kv_in_dim),
            "internal_dim": int(ca.internal_dim),
        },
    }


# ---------------------------------------------------------------- verification


class Oracle(_BaseOracle):
    """EdgeTAM's own PyTorch code paths. `memory_encoder` is inherited: sam2's `_encode_new_memory`
    runs the perceiver when the model has one; memory attention gets `num_spatial_mem`."""

    @torch.no_grad()
    def memory_attention(self, curr, mem, mem_pos, ptr, ptr_pos):
        t = torch.from_numpy
        b = curr.shape[0]
        n = mem.shape[1] // memory_layout(self.m)["tokens_per_frame"]
        out = self.m.memory_attention(
            curr=[t(curr).transpose(0, 1)], curr_pos=[self.curr_pos().expand(-1, b, -1)],
            memory=torch.cat([t(mem), t(ptr)], dim=1).transpose(0, 1),
            memory_pos=torch.cat([t(mem_pos), t(ptr_pos)], dim=1).transpose(0, 1),
            num_obj_ptr_tokens=ptr.shape[1], num_spatial_mem=n)
        return {"conditioned": out.permute(1, 2, 0).reshape(b, -1, self.grid, self.grid).numpy()}


def random_inputs(model):
    """`verify.random_inputs` with memories of T tokens per frame instead of h*w."""
    import numpy as np

    from . import verify

    t = memory_layout(model)["tokens_per_frame"]

    def inputs(graph: str, s: int, seed: int, n_mem: int = 2, n_ptr: int = 8) -> dict:
        if graph != "memory_attention":
            return verify.random_inputs(graph, s, seed, n_mem, n_ptr)
        rng = np.random.default_rng(seed)
        g = s // 16

        def rn(*shape):
            return rng.standard_normal(shape).astype(np.float32)
        return {"curr": rn(1, g * g, 256), "mem": rn(1, n_mem * t, 64), "mem_pos": rn(1, n_mem * t, 64),
                "ptr": rn(1, n_ptr, 64), "ptr_pos": rn(1, n_ptr, 64)}
    return inputs
