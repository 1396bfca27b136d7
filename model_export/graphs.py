"""The five stateless graphs the serving engine runs, as torch modules ready for `ov.convert_model`.

All memory-bank logic (which memories and pointers a frame attends to, their
temporal encodings, mask selection, no-object handling) stays on the serving
side in numpy; these graphs only hold the learned compute. Shapes use
S = model input side (e.g. 1024), h = w = S/16, B = number of objects.

| graph | inputs | outputs |
|---|---|---|
| image_encoder | image [1,3,S,S] | hr0 [1,32,S/4,S/4], hr1 [1,64,S/8,S/8], feat [1,256,h,w] |
| prompt_decoder | image_embed [B,256,h,w], hr0, hr1 (batch 1 or B), point_coords [B,N,2], point_labels [B,N] int32, mask_input [B,1,4h,4w], has_mask_input [B] | low_res_masks [B,4,4h,4w], iou_scores [B,4], obj_ptrs [B,4,256], object_score_logits [B,1] |
| memory_encoder | pix_feat [1 or B,256,h,w], mask_logits [B,1,4h,4w], binarize [B], object_score_logits [B,1] | maskmem_features [B,64,h,w] |
| memory_attention | curr [B,hw,256], mem [B,n*hw,64], mem_pos [B,n*hw,64], ptr [B,p,64], ptr_pos [B,p,64] | conditioned [B,256,h,w] |
| mask_prompt | mask [1,1,H,W] (0/1, any size) | low_res_logits [1,1,4h,4w], mask_for_decoder [1,1,4h,4w], mask_pixels [1] |
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ImageEncoderGraph(nn.Module):
    """Hiera trunk + FPN neck + the decoder's conv_s0/conv_s1 (as `SAM2Base.forward_image`).

    image: [1,3,S,S] float32, RGB resized to S x S, scaled to [0,1] then ImageNet-normalised.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        fpn = self.model.forward_image(image)["backbone_fpn"]
        return fpn[0], fpn[1], fpn[2]


class PromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder + object-pointer head, with every output token kept.

    point_coords are in model-input pixels (0..S), point_labels are 1 positive,
    0 negative, 2/3 box corners, -1 padding. `has_mask_input` (1.0 or 0.0 per
    object) chooses between the dense embedding of `mask_input` (low-res mask
    logits) and the learned no-mask embedding, so one graph serves both cases.
    Mask selection (single vs multi, stability fallback) happens outside.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image_embed, hr0, hr1, point_coords, point_labels, mask_input, has_mask_input):
        pe = self.model.sam_prompt_encoder
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        dense_mask = pe._embed_masks(mask_input)
        no_mask = pe.no_mask_embed.weight.reshape(1, -1, 1, 1)
        has = has_mask_input.reshape(-1, 1, 1, 1)
        dense = has * dense_mask + (1.0 - has) * no_mask
        masks, iou, tokens, score = self.model.sam_mask_decoder.predict_masks(
            image_embeddings=image_embed,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            repeat_image=False,
            high_res_features=[hr0, hr1],
        )
        return masks, iou, self.model.obj_ptr_proj(tokens), score


class MemoryEncoderGraph(nn.Module):
    """Memory encoder fed with low-res mask logits, as `SAM2Base._encode_new_memory` sees them.

    The logits are upsampled to S x S (bilinear), then binarised (`binarize`=1,
    frames with user prompts) or passed through a sigmoid, scaled and biased as
    the config says. Objects judged absent (`object_score_logits` <= 0) get the
    SAM 2.1 no-object spatial embedding.
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.image_size = model.image_size

    def forward(self, pix_feat, mask_logits, binarize, object_score_logits):
        m = self.model
        hr = F.interpolate(mask_logits, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        b = binarize.reshape(-1, 1, 1, 1)
        mask = b * (hr > 0).float() + (1.0 - b) * torch.sigmoid(hr)
        if m.sigmoid_scale_for_mem_enc != 1.0:
            mask = mask * m.sigmoid_scale_for_mem_enc
        if m.sigmoid_bias_for_mem_enc != 0.0:
            mask = mask + m.sigmoid_bias_for_mem_enc
        feats = m.memory_encoder(pix_feat, mask, skip_mask_sigmoid=True)["vision_features"]
        if m.no_obj_embed_spatial is not None:
            absent = 1.0 - (object_score_logits > 0).float()
            feats = feats + absent[..., None, None] * m.no_obj_embed_spatial[..., None, None]
        return feats


def rope_cos_sin(attn, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Real and imaginary parts of sam2's axial RoPE table for a grid x grid feature map: [grid*grid, D/2] each."""
    cis = attn.compute_cis(end_x=grid, end_y=grid)
    return cis.real.float().contiguous(), cis.imag.float().contiguous()


def rotated_linear(lin: nn.Linear, scale: float = 1.0) -> nn.Linear:
    """A Linear giving [y, rot(y)] for y = lin(x), where rot maps each pair (y[2i], y[2i+1]) to (-y[2i+1], y[2i]).

    RoPE is then y * cos + rot(y) * sin with per-channel tables: one matmul and two multiplies instead of
    split/stack/interleave on every token. The rotated rows are copies (and negations) of lin's rows, so
    rot(y) holds the same numbers as y. `scale` (a power of two here, so exact) folds the attention scale in.
    """
    w, b = lin.weight.detach(), lin.bias.detach()
    w_rot = torch.stack([-w[1::2], w[0::2]], dim=1).reshape_as(w)
    b_rot = torch.stack([-b[1::2], b[0::2]], dim=1).reshape_as(b)
    out = nn.Linear(lin.in_features, 2 * lin.out_features)
    with torch.no_grad():
        out.weight.copy_(torch.cat([w, w_rot]) * scale)
        out.bias.copy_(torch.cat([b, b_rot]) * scale)
    return out


def blocked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention of queries q [B,1,M,D] to each of K key blocks k [B,K,N,D] (values v [B,K,N,C]) on its own.

    Returns (out [B,K,M,C], log_z [B,K,M,1]): each block's softmax attention and the log of its softmax
    denominator, log sum_j exp(q.k_j), which `merge_blocks` needs to combine blocks exactly.

    The fused MatMul -> Softmax -> MatMul kernel returns only normalised rows, so each block gets one more key, a
    "sink" whose score s = q . mean(k) is known (computed apart, M x D per block), and two more value channels:
    1 on the block's own keys (giving r = Z / (e^s + Z)) and 1 on the sink (giving e^s / (e^s + Z)); then
    Z = e^s r / sink, and out = (the first C channels) / r. Both channels are sums the kernel computes anyway, so
    nothing is subtracted (no cancellation); the sink's score is the block's mean score, so e^s / (e^s + Z) is at
    most 1/(N+1), and in float32 it underflows only where a query's largest score in the block exceeds its mean
    score there by ~87 (the block's softmax row is then one-hot to 1e-37). That block's log_z is then too low, which
    changes the merged result only if another block of the same query has such a peak too (one such block outweighs
    the others by e^80 either way). Blocks must not be empty (see `pointer_attention`).
    """
    sink = k.mean(dim=2, keepdim=True)                                            # [B,K,1,D]: the mean key
    keys = torch.cat([k, sink], dim=2)                                            # [B,K,N+1,D]
    ones = torch.ones_like(v[..., :1])
    own = torch.cat([v, ones, torch.zeros_like(ones)], dim=-1)                    # [B,K,N,C+2]
    # no `expand` anywhere here: OpenVINO 2026.4.1 kept the first call's target shape of the Broadcast it becomes
    # (a later call with another memory count failed shape inference); zeros are sliced from real tensors instead
    zv, zc = torch.zeros_like(v[:, :, :1]), torch.zeros_like(v[:, :, :1, :1])     # [B,K,1,C], [B,K,1,1]
    sink_v = torch.cat([zv, zc, zc + 1], dim=-1)                                  # [B,K,1,C+2]
    p = torch.softmax(torch.matmul(q, keys.transpose(-1, -2)), dim=-1)             # [B,K,M,N+1]
    o = torch.matmul(p, torch.cat([own, sink_v], dim=2))                          # [B,K,M,C+2]
    c = v.shape[-1]
    val, r, s_w = o[..., :c], o[..., c:c + 1], o[..., c + 1:]
    s = torch.matmul(q, sink.transpose(-1, -2))                                   # [B,K,M,1]
    tiny = torch.finfo(torch.float32).tiny
    log_z = torch.log(r) - torch.log(torch.clamp(s_w, min=tiny)) + s
    return val / torch.clamp(r, min=tiny), log_z


def pointer_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The object pointers as one more block for `merge_blocks`: q [B,M,D], k [B,p,D], v [B,p,C] with p >= 0 (a
    frame may have no pointers) -> (out [B,1,M,C], log_z [B,1,M,1]; log_z = -inf and out = 0 when p = 0).

    Written with an explicit exp instead of Softmax: a few dozen keys need no fused kernel, and OpenVINO 2026.4's
    fused one, once run with p = 0 (one key after padding), returned garbage for p >= 16 on the same infer request.
    A zero key (score 0, value 0) keeps the row max defined when p = 0; it is left out of both sums.
    """
    # [B,1,D] for q of batch 1 or B and p >= 0, by broadcasting arithmetic (no `expand`, see `blocked_attention`)
    pad = torch.zeros_like(q[:, :1]) + torch.zeros_like(k.sum(dim=1, keepdim=True))
    s = torch.matmul(q, torch.cat([k, pad], dim=1).transpose(1, 2))                 # [B,M,p+1]
    mx = s.amax(dim=-1, keepdim=True)
    e = torch.exp(s - mx)
    ones = torch.ones_like(v[..., :1])
    own = torch.cat([v, ones], dim=-1)                                              # [B,p,C+1]
    o = torch.matmul(e, torch.cat([own, torch.zeros_like(pad[..., :v.shape[-1] + 1])], dim=1))  # [B,M,C+1]
    c = v.shape[-1]
    z = o[..., c:]
    tiny = torch.finfo(torch.float32).tiny
    return (o[..., :c] / torch.clamp(z, min=tiny)).unsqueeze(1), (torch.log(z) + mx).unsqueeze(1)


def merge_blocks(out: torch.Tensor, log_z: torch.Tensor) -> torch.Tensor:
    """Attention over all blocks' keys at once from per-block results (`blocked_attention`): the blocks' outputs
    weighted by their share of the total softmax denominator, softmax over log_z. out [B,K,M,C] -> [B,M,C]."""
    return (out * torch.softmax(log_z, dim=1)).sum(dim=1)


class MemoryAttentionGraph(nn.Module):
    """sam2's MemoryAttention with real-valued RoPE and separate spatial / pointer memories.

    curr: [1,hw,256] the current frame's feature, shared by the B objects (or [B,hw,256], one per object);
    mem/mem_pos: [B, n*hw, 64] spatial memories of n frames and their spatial +
    temporal encodings; ptr/ptr_pos: [B, p, 64] object-pointer tokens (p may be
    0) and their encodings. The frame's own position encoding is a constant.

    Written for the CPU plugin, exactly equal in real arithmetic to sam2's module:
    - cross-attention values are never projected per key: v_proj is linear and softmax rows sum to 1,
      so softmax(QK^T) @ (X W^T + b) = (softmax(QK^T) @ X) W^T + b with X = [mem; ptr] (64 channels):
      the second attention matmul runs over 64 channels instead of 256 (4x fewer FLOPs there);
    - attention is written as MatMul -> Softmax -> MatMul, which OpenVINO's CPU plugin fuses into one
      tiled kernel (a snippets "Subgraph") that never holds the whole score matrix in memory;
    - RoPE is folded into the projections (`rotated_linear`), the 1/sqrt(d) scale into the query weights;
    - with curr of batch 1, what depends on the frame alone runs once for all B objects: layer 0's input,
      self-attention and cross-attention queries (about 5% of one object's graph); batches broadcast after that;
    - cross-attention runs per key block (`blocked_attention`: one block per memory frame, one for the pointers)
      and the blocks are merged exactly: the fused kernel loses efficiency with the key count (2-core AMD EPYC,
      bf16, 4096 queries: 349 GFLOP/s at 4096 keys, 243 at 14,336, 179 at 28,736).
    """

    def __init__(self, model):
        super().__init__()
        self.ma = model.memory_attention
        self.grid = model.image_size // model.backbone_stride
        pos = model.image_encoder.neck.position_encoding(torch.zeros(1, model.hidden_dim, self.grid, self.grid))
        self.register_buffer("curr_pos", pos.flatten(2).transpose(1, 2).contiguous(), persistent=False)
        cos, sin = rope_cos_sin(self.ma.layers[0].self_attn, self.grid)
        # per-channel tables [hw, D]: channel 2i and 2i+1 share frequency i
        self.register_buffer("cos", cos.repeat_interleave(2, dim=1).contiguous(), persistent=False)
        self.register_buffer("sin", sin.repeat_interleave(2, dim=1).contiguous(), persistent=False)
        self.self_q, self.self_k, self.cross_q, self.cross_k = (nn.ModuleList() for _ in range(4))
        for layer in self.ma.layers:
            sa, ca = layer.self_attn, layer.cross_attn_image
            for attn in (sa, ca):
                if attn.num_heads != 1:
                    raise NotImplementedError(f"memory attention with {attn.num_heads} heads: every SAM 2.1 config "
                                              f"uses 1; extend MemoryAttentionGraph before exporting this model")
            self.self_q.append(rotated_linear(sa.q_proj, sa.internal_dim ** -0.5))
            self.self_k.append(rotated_linear(sa.k_proj))
            self.cross_q.append(rotated_linear(ca.q_proj, ca.internal_dim ** -0.5))
            self.cross_k.append(rotated_linear(ca.k_proj))

    def _rope(self, lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        """RoPE(lin_original(x)) for x [B, r*hw, C]: the table repeats over r (memory frames, dynamic)."""
        b, n, _ = x.shape
        y = lin(x)
        d = y.shape[-1] // 2
        y = y.reshape(b, -1, self.cos.shape[0], 2 * d)
        return (y[..., :d] * self.cos + y[..., d:] * self.sin).reshape(b, n, d)

    @staticmethod
    def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.softmax(torch.matmul(q, k.transpose(1, 2)), dim=-1), v)

    def _cross(self, q: torch.Tensor, km: torch.Tensor, kp: torch.Tensor, mem: torch.Tensor,
               ptr: torch.Tensor) -> torch.Tensor:
        """softmax(q [km; kp]^T) [mem; ptr] for q [1 or B,hw,D], km [B,n*hw,D], kp [B,p,D], mem [B,n*hw,C], ptr [B,p,C],
        computed per memory frame and for the pointers, then merged (`blocked_attention`)."""
        _, hw, d = q.shape
        b = km.shape[0]  # q may have batch 1 (the frame shared by the objects)
        blocks = blocked_attention(q.unsqueeze(1), km.reshape(b, -1, hw, d), mem.reshape(b, -1, hw, mem.shape[-1]))
        pointers = pointer_attention(q, kp, ptr)
        return merge_blocks(*(torch.cat(x, dim=1) for x in zip(blocks, pointers)))

    def forward(self, curr, mem, mem_pos, ptr, ptr_pos):
        ma = self.ma
        qpos = self.curr_pos
        out = curr + 0.1 * qpos if ma.pos_enc_at_input else curr
        for i, layer in enumerate(ma.layers):
            # self-attention, RoPE on queries and keys
            t = layer.norm1(out)
            qk = t + qpos if layer.pos_enc_at_attn else t
            sa = layer.self_attn
            att = self._attend(self._rope(self.self_q[i], qk), self._rope(self.self_k[i], qk), sa.v_proj(t))
            out = out + sa.out_proj(att)
            # cross-attention to memories; RoPE on queries and spatial keys, not on pointer tokens
            t = layer.norm2(out)
            ca = layer.cross_attn_image
            q_in = t + qpos if layer.pos_enc_at_cross_attn_queries else t
            km = mem + mem_pos if layer.pos_enc_at_cross_attn_keys else mem
            kp = ptr + ptr_pos if layer.pos_enc_at_cross_attn_keys else ptr
            att = self._cross(self._rope(self.cross_q[i], q_in), self._rope(self.cross_k[i], km), ca.k_proj(kp),
                              mem, ptr)
            out = out + ca.out_proj(ca.v_proj(att))
            # feed-forward
            t = layer.norm3(out)
            out = out + layer.linear2(layer.activation(layer.linear1(t)))
        out = ma.norm(out)
        b = out.shape[0]
        return out.transpose(1, 2).reshape(b, -1, self.grid, self.grid)


class MaskPromptGraph(nn.Module):
    """A user mask at any resolution -> what `add_new_mask` + `_use_mask_as_output` derive from it.

    mask: [1,1,H,W] 0/1. It is resized to S x S (bilinear, antialiased) and
    thresholded at 0.5 exactly as `add_new_mask` does; outputs the low-res
    logits SAM 2 stores for the frame (mask*20-10, downsampled), the
    `mask_downsample` conv output the decoder needs to produce the object
    pointer, and how many pixels of the S x S mask are set (0 = object absent).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.image_size = model.image_size

    def forward(self, mask):
        s = self.image_size
        m = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        m = (m >= 0.5).float()
        low = F.interpolate(m * 20.0 - 10.0, size=(s // 4, s // 4), mode="bilinear", align_corners=False, antialias=True)
        return low, self.model.mask_downsample(m), m.sum().reshape(1)
