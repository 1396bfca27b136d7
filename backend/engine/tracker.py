"""SAM 2's per-frame compute on the OpenVINO graphs, over the B objects of a frame.

This layer knows tensors, not sessions: encode a frame (through the feature
cache), condition it on each object's memories, decode masks, encode new
memories, and digest a mask prompt. Shapes: S model side, h = S/16, B objects.
"""
from __future__ import annotations

import logging
import numpy as np

from .features import FeatureCache, FrameFeatures
from .frames import FrameSource, preprocess
from .heads import HeadOutput, mix_no_object_pointer, select_outputs
from .memory import MemoryInputs
from .model import ModelBundle
from .numerics import to_bf16
from .runtime import Runtime

log = logging.getLogger(__name__)


class Tracker:
    def __init__(self, runtime: Runtime, features: FeatureCache, *, attention_batch: int = 1):
        self.rt = runtime
        self.attention_batch = max(1, int(attention_batch))
        self.bundle: ModelBundle = runtime.bundle
        self.cfg = self.bundle.config
        self.cache = features
        self.no_obj_ptr = self.bundle.constants.get("no_obj_ptr")
        self.no_mem_embed = self.bundle.constants["no_mem_embed"].reshape(1, -1, 1, 1)

    # ---- image features -------------------------------------------------------------------
    def features(self, source: FrameSource, frame: int, *, background: bool = False) -> FrameFeatures | None:
        """Encoder outputs of one frame, from the cache when this (video, frame) was seen before.

        background=True (prewarm): the encoder runs at background priority (`Runtime.run_background`) and None comes
        back when foreground work preempted it (nothing cached then)."""
        key = (source.key, frame)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        b = self.bundle
        image = preprocess(source.read(frame), b.image_size, b.mean, b.std)
        out = self.rt.run_background("image_encoder", image=image) if background else \
            self.rt.run("image_encoder", image=image)
        if out is None:
            return None
        feats = FrameFeatures(out["hr0"], out["hr1"], out["feat"])
        self.cache.put(key, feats)
        return feats

    # ---- memory conditioning --------------------------------------------------------------
    def without_memory(self, feats: FrameFeatures, batch: int) -> np.ndarray:
        """An initial conditioning frame: the feature plus the no-memory embedding, [B,256,h,w]."""
        return np.repeat(feats.feat + self.no_mem_embed, batch, axis=0)

    def condition(self, feats: FrameFeatures, memories: list[MemoryInputs]) -> np.ndarray:
        """Memory attention for each object: [B,256,h,w].

        Objects whose memories have the same shapes (memory frames and pointer tokens: at steady state, all of
        them) go in one call with the frame given once ([1,hw,256]); the graph then runs what depends on the frame
        alone (layer 0's self-attention and its cross-attention queries) once for all of them. On a 2-core
        AVX512-BF16 EPYC at 1024 px with 7 memories, 3 objects take 3.79 s as one call and 3.88 s as 3 calls
        before that sharing (benchmarks/attention.py --objects 1,3); with the one-block attention kernel that
        preceded key blocks, a batch of 3 cost 7.65 s against 5.04 s as 3 calls. Exports without
        `objects_share_frame` (older ones, EdgeTAM) get one call per object. At most `attention_batch` objects go
        in one call: each holds ~240 MB of intermediate buffers at 1024 px (+250, +730, +1160 MB RSS for 1, 3, 5
        objects), so by default the engine puts in as many as 1/16 of the memory limit holds (`batching`).
        """
        hw = feats.feat.shape[2] * feats.feat.shape[3]
        curr = feats.feat.reshape(1, feats.feat.shape[1], hw).transpose(0, 2, 1)
        out = np.empty((len(memories),) + feats.feat.shape[1:], np.float32)
        groups: dict[tuple, list[int]] = {}
        for i, m in enumerate(memories):  # older exports and EdgeTAM: one object per call
            key = (m.mem.shape, m.ptr.shape) if self.bundle.objects_share_frame else (i,)
            groups.setdefault(key, []).append(i)
        chunks = [idx[i:i + self.attention_batch] for idx in groups.values()
                  for i in range(0, len(idx), self.attention_batch)]
        for idx in chunks:
            ms = [memories[i] for i in idx]

            def batch(name: str) -> np.ndarray:  # one object: a view, no copy of its ~15 MB of memories
                return getattr(ms[0], name)[None] if len(ms) == 1 else np.stack([getattr(m, name) for m in ms])
            out[idx] = self.rt.run("memory_attention", curr=curr, mem=batch("mem"), mem_pos=batch("mem_pos"),
                                   ptr=batch("ptr"), ptr_pos=batch("ptr_pos"))["conditioned"]
        return out

    # ---- decoding --------------------------------------------------------------------------
    def decode(self, pix: np.ndarray, feats: FrameFeatures, *, multimask: bool,
               point_coords: np.ndarray | None = None, point_labels: np.ndarray | None = None,
               mask_input: np.ndarray | None = None) -> HeadOutput:
        """Prompt decoder on B objects.

        point_coords [B,N,2] in model-input pixels and point_labels [B,N] (None: a padding point,
        as sam2 uses while tracking); mask_input [B,1,S/4,S/4] logits or None.
        """
        b = pix.shape[0]
        lr = self.bundle.low_res_size
        if point_coords is None:
            point_coords = np.zeros((b, 1, 2), np.float32)
            point_labels = -np.ones((b, 1), np.int32)
        has_mask = np.float32(mask_input is not None)
        raw = self.rt.run(
            "prompt_decoder", image_embed=pix, hr0=feats.hr0, hr1=feats.hr1,
            point_coords=point_coords.astype(np.float32), point_labels=point_labels.astype(np.int32),
            mask_input=mask_input if mask_input is not None else np.zeros((b, 1, lr, lr), np.float32),
            has_mask_input=np.full((b,), has_mask, np.float32),
        )
        return select_outputs(raw, multimask, self.cfg, self.no_obj_ptr)

    # ---- memory encoding -------------------------------------------------------------------
    def encode_memory(self, feats: FrameFeatures, low_res: np.ndarray, object_score: np.ndarray,
                      *, from_prompts: bool) -> np.ndarray:
        """Memories of B objects as bf16 bits (sam2 stores them in bfloat16): [B, mem_dim, h, w] for SAM 2.1,
        [B, T, mem_dim] perceiver tokens for EdgeTAM (the bundle's `memory` layout).

        low_res [B, S/4, S/4] logits; prompted frames are binarised when the config says so.
        """
        b = low_res.shape[0]
        binarize = np.float32(from_prompts and self.cfg.binarize_mask_from_pts_for_mem_enc)
        out = self.rt.run("memory_encoder", pix_feat=feats.feat, mask_logits=low_res[:, None].astype(np.float32),
                          binarize=np.full((b,), binarize, np.float32),
                          object_score_logits=object_score.reshape(b, 1).astype(np.float32))
        return to_bf16(out["maskmem_features"])

    # ---- mask prompts ----------------------------------------------------------------------
    def mask_as_output(self, feats: FrameFeatures, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """sam2's `add_new_mask` + `_use_mask_as_output` for one object.

        mask: [H, W] bool/0-1 at any resolution. Returns (low-res logits [S/4,S/4], object pointer
        [hidden], object score logit (+10 present / -10 absent)).
        """
        out = self.rt.run("mask_prompt", mask=mask.astype(np.float32)[None, None])
        heads = self.decode(feats.feat, feats, multimask=False, mask_input=out["mask_for_decoder"])
        present = np.asarray([out["mask_pixels"][0] > 0])
        ptr = heads.obj_ptr
        if self.cfg.pred_obj_scores:
            ptr = mix_no_object_pointer(ptr, present, self.cfg, self.no_obj_ptr)
        score = 20.0 * float(present[0]) - 10.0
        return out["low_res_logits"][0, 0], ptr[0], score
