"""Fetch and check official SAM 2.1 checkpoints.

Every failure raises `CheckpointError` with one sentence that says what is wrong
and what to do; the CLI prints it without a traceback.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Mapping

import requests

from .catalog import ModelSpec, guess_model

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# keys that SAM 2.1 added over SAM 2.0; their absence means a 2.0 checkpoint
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")


class CheckpointError(RuntimeError):
    """A checkpoint could not be fetched or does not fit the requested model."""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1(path: Path) -> str:
    """The id git gives this file's content (`git hash-object`): sha1 of "blob <size>\\0" + bytes."""
    h = hashlib.sha1(f"blob {Path(path).stat().st_size}\0".encode())
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _total_size(resp: requests.Response, already: int) -> int | None:
    """Full file size from a 200 (Content-Length) or 206 (Content-Range) answer."""
    if resp.status_code == 206:
        m = re.match(r"bytes \d+-\d+/(\d+)", resp.headers.get("Content-Range", ""))
        return int(m.group(1)) if m else None
    length = resp.headers.get("Content-Length")
    return int(length) if length is not None else None


def download(url: str, dest: Path, *, timeout: float = 30.0, session: requests.Session | None = None) -> Path:
    """Download `url` to `dest`, resuming a previous partial download (`dest.part`).

    The file only appears at `dest` once its size equals the size the server
    announced; an interrupted download leaves `dest.part` to resume from.
    """
    dest = Path(dest)
    if dest.exists():
        log.info("checkpoint already present: %s", dest)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={have}-"} if have else {}
    http = session or requests.Session()
    host = requests.utils.urlparse(url).hostname
    try:
        resp = http.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.ConnectionError as e:
        raise CheckpointError(
            f"cannot reach {host} ({type(e).__name__}): this machine looks offline; download {url} "
            f"elsewhere and pass --checkpoint PATH, or use --random-init for an offline test model"
        ) from None
    except requests.Timeout:
        raise CheckpointError(f"{host} did not answer within {timeout:.0f} s; try again later or pass --checkpoint PATH") from None
    with resp:
        if resp.status_code == 416 and have:
            # the part file is already complete (or larger than the remote file): start over
            part.unlink()
            return download(url, dest, timeout=timeout, session=http)
        if resp.status_code not in (200, 206):
            raise CheckpointError(f"{url} answered HTTP {resp.status_code}; check the URL or pass --checkpoint PATH")
        if resp.status_code == 200 and have:
            log.info("server ignored the resume request; downloading from the start")
            have = 0
        total = _total_size(resp, have)
        mode = "ab" if have else "wb"
        log.info("downloading %s -> %s (%s bytes%s)", url, dest, total if total else "unknown",
                 f", resuming at {have}" if have else "")
        try:
            with open(part, mode) as f:
                for block in resp.iter_content(CHUNK):
                    f.write(block)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            # a connection dropped mid-body surfaces as ChunkedEncodingError (urllib3 IncompleteRead)
            raise CheckpointError(
                f"download interrupted ({type(e).__name__}) after {part.stat().st_size} bytes; "
                f"run the same command again to resume"
            ) from None
    got = part.stat().st_size
    if total is not None and got != total:
        raise CheckpointError(
            f"download incomplete: {got} of {total} bytes in {part}; run the same command again to resume"
        )
    os.replace(part, dest)
    return dest


def load_state_dict(path: Path) -> dict:
    """Read the `model` state dict of an official checkpoint, with clear errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass the path of an official SAM 2.1 .pt file")
    size = path.stat().st_size
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for broken files
        msg = str(e).splitlines()[0][:160]
        raise CheckpointError(
            f"{path} ({size} bytes) is not a readable PyTorch checkpoint ({msg}); "
            f"it is probably truncated or not a model file: download it again"
        ) from None
    if not isinstance(obj, Mapping) or "model" not in obj or not isinstance(obj["model"], Mapping):
        keys = list(obj)[:5] if isinstance(obj, Mapping) else type(obj).__name__
        raise CheckpointError(
            f"{path} has no 'model' state dict (found {keys}); pass an official SAM 2.1 checkpoint file"
        )
    return dict(obj["model"])


def _trunk_blocks(keys) -> int:
    """Number of Hiera blocks named in a state dict."""
    return len({int(m.group(1)) for k in keys if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))})


def check_keys(state: Mapping, expected: Mapping, spec: ModelSpec) -> None:
    """Compare checkpoint tensors with the model built from `spec`'s config.

    Raises CheckpointError naming the likely cause: a SAM 2.0 checkpoint, a
    checkpoint of another model size, or tensors of the wrong shape.
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing and set(missing) <= set(SAM21_ONLY_KEYS) | {k for k in missing if k.startswith("obj_ptr_tpos_proj")}:
        raise CheckpointError(
            f"this is a SAM 2.0 checkpoint (it lacks {', '.join(sorted(missing))}); "
            f"use the SAM 2.1 file {spec.checkpoint_file} from {spec.url}"
        )
    embed = state.get("image_encoder.trunk.patch_embed.proj.weight")
    found = guess_model(int(embed.shape[0]), _trunk_blocks(state)) if hasattr(embed, "shape") else None
    if missing or unexpected:
        hint = f" it looks like {found}; pass --model {found}" if found and found != spec.name else ""
        raise CheckpointError(
            f"checkpoint does not match {spec.name}: {len(missing)} missing tensors (e.g. {missing[:2]}) and "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]});{hint or ' pass the matching --model'}"
        )
    bad = [k for k in expected if tuple(state[k].shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        hint = f"; it looks like {found}, pass --model {found}" if found and found != spec.name else ""
        raise CheckpointError(
            f"checkpoint does not match {spec.name}: {len(bad)} tensors have other shapes "
            f"(e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)}){hint}"
        )
