"""Build the PyTorch SAM 2.1 video model that the export (and the test oracle) starts from."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from .catalog import ModelSpec
from .checkpoint import check_keys, load_state_dict

log = logging.getLogger(__name__)


def check_image_size(image_size: int) -> int:
    """SAM 2's Hiera trunk downsamples by 32: the model input side must be a multiple of 32."""
    if image_size % 32 or image_size < 128:
        raise ValueError(f"--image-size must be a multiple of 32 and at least 128 (got {image_size}); 1024 is what SAM 2.1 was trained at")
    return image_size


def hydra_overrides(image_size: int) -> list[str]:
    """Config overrides for a model input of `image_size` pixels (the RoPE grid follows the feature map)."""
    grid = check_image_size(image_size) // 16
    return [
        f"++model.image_size={image_size}",
        f"++model.memory_attention.layer.self_attention.feat_sizes=[{grid},{grid}]",
        f"++model.memory_attention.layer.cross_attention.feat_sizes=[{grid},{grid}]",
    ]


def _overrides(spec: ModelSpec, image_size: int) -> list[str]:
    if spec.family == "edgetam":
        from . import edgetam
        return edgetam.hydra_overrides(image_size)
    return hydra_overrides(image_size)


def build_video_model(
    spec: ModelSpec,
    *,
    image_size: int = 1024,
    checkpoint: Path | None = None,
    seed: int | None = None,
    object_score_bias: float | None = None,
    extra_overrides: list[str] | None = None,
):
    """Return an eval-mode `SAM2VideoPredictor` on the CPU.

    Exactly one of `checkpoint` (an official .pt file, checked against the
    config) or `seed` (random initialisation, for tests and offline machines)
    must be given. `object_score_bias` (random-init only) adds a constant to
    the object-score head so that random weights produce non-empty masks.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    if (checkpoint is None) == (seed is None):
        raise ValueError("give exactly one of checkpoint= or seed=")
    if object_score_bias is not None and seed is None:
        raise ValueError("object_score_bias only applies to random-init models")
    state = load_state_dict(checkpoint) if checkpoint is not None else None
    torch.manual_seed(seed if seed is not None else 0)
    model = build_sam2_video_predictor(
        spec.config, ckpt_path=None, device="cpu",
        hydra_overrides_extra=_overrides(spec, image_size) + list(extra_overrides or []),
    )
    if state is not None:
        check_keys(state, model.state_dict(), spec)
        model.load_state_dict(state, strict=True)
        log.info("loaded %s weights from %s", spec.name, checkpoint)
    else:
        log.warning("RANDOM WEIGHTS (seed %d): this model segments nothing meaningful; use it for tests only", seed)
        if object_score_bias is not None:
            head = model.sam_mask_decoder.pred_obj_score_head
            last = head.layers[-1] if hasattr(head, "layers") else head
            with torch.no_grad():
                last.bias.add_(object_score_bias)
    model.eval()
    return model


def weights_fingerprint(model) -> str:
    """sha256 over every tensor of the state dict (names, shapes and float32 bytes), sorted by name."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().float().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()
