"""The four official SAM 2.1 models: config file inside the `sam2` package and checkpoint URL."""
from __future__ import annotations

from dataclasses import dataclass

CHECKPOINT_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824"
EDGETAM_CHECKPOINT_URL = ("https://github.com/facebookresearch/EdgeTAM/raw/"
                          "1c2ec2184a3313a5657ac924f450ddf72b56eebf/checkpoints/edgetam.pt")


@dataclass(frozen=True)
class ModelSpec:
    name: str            # e.g. "sam2.1_hiera_tiny"
    config: str          # hydra config name inside the sam2 package
    checkpoint_file: str
    trunk_embed_dim: int  # used to tell models apart in a checkpoint
    trunk_blocks: int     # sum of Hiera stages
    family: str = "sam2.1"  # "edgetam": exported by model_export/edgetam.py's hooks, in the EdgeTAM venv
    checkpoint_url: str | None = None  # when not under CHECKPOINT_BASE_URL
    git_blob_sha1: str | None = None  # `git hash-object` of the checkpoint, when that is the published identity

    @property
    def url(self) -> str:
        return self.checkpoint_url or f"{CHECKPOINT_BASE_URL}/{self.checkpoint_file}"


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("sam2.1_hiera_tiny", "configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", 96, 12),
        ModelSpec("sam2.1_hiera_small", "configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", 96, 16),
        ModelSpec("sam2.1_hiera_base_plus", "configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt", 112, 24),
        ModelSpec("sam2.1_hiera_large", "configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", 144, 48),
        # EdgeTAM ships its checkpoint in its repository (a plain git blob, no published sha256): pinned to the
        # commit that added it and checked against that blob's id after download
        ModelSpec("edgetam", "configs/edgetam.yaml", "edgetam.pt", 0, 0, family="edgetam",
                  checkpoint_url=EDGETAM_CHECKPOINT_URL, git_blob_sha1="abd54d22bbd22ba3e53cf59a307e59e0f3701be6"),
    )
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def guess_model(embed_dim: int, blocks: int) -> str | None:
    """Name of the catalog model whose Hiera trunk has this width and depth, if any."""
    for m in MODELS.values():
        if m.trunk_embed_dim == embed_dim and m.trunk_blocks == blocks:
            return m.name
    return None
