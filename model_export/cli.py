"""`python -m model_export`: SAM 2.1 checkpoint -> OpenVINO IR for the serving engine."""
from __future__ import annotations

import argparse
import logging
import resource
import time
from pathlib import Path

from .catalog import MODELS, get_model
from .checkpoint import CheckpointError, download
from .convert import PRECISIONS

log = logging.getLogger("model_export")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m model_export", description=__doc__)
    p.add_argument("--model", default="sam2.1_hiera_tiny", choices=list(MODELS))
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", type=Path, help="an official SAM 2.1 .pt file")
    src.add_argument("--download", action="store_true", help="fetch the official checkpoint (resumable)")
    src.add_argument("--random-init", action="store_true", help="random weights, for tests and offline machines")
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init")
    p.add_argument("--random-object-bias", type=float, default=None,
                   help="with --random-init: add this to the object-score head so random weights give non-empty masks")
    p.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"), help="where --download stores files")
    p.add_argument("--sha256", help="expected sha256 of the checkpoint (fails on mismatch)")
    p.add_argument("--out", type=Path, help="output folder (default: models/<model>_<size>_<precision>)")
    p.add_argument("--precision", default="bf16", choices=PRECISIONS,
                   help="bf16: fp16-stored weights, bf16 inference hint; f32: exact; int8-weights: NNCF-compressed")
    p.add_argument("--image-size", type=int, default=1024, help="model input side in pixels (multiple of 32)")
    p.add_argument("--verify", action="store_true", help="compare every IR with sam2 in PyTorch after export")
    p.add_argument("--threads", type=int, default=0, help="OpenVINO/torch threads for --verify (0 = all cores)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.random_object_bias is not None and not args.random_init:
        p.error("--random-object-bias only goes with --random-init")
    if args.out is None:
        args.out = Path("models") / f"{args.model}_{args.image_size}_{args.precision}"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("torch", "nncf", "urllib3", "hydra"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    t0 = time.perf_counter()
    spec = get_model(args.model)
    try:
        return _run(args, spec)
    except (CheckpointError, ValueError) as e:
        log.error("%s", e)
        return 2
    finally:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        log.info("wall time %.1f s, peak RSS %.0f MB", time.perf_counter() - t0, peak)


def _run(args, spec) -> int:
    import warnings

    import torch

    warnings.filterwarnings("ignore", message=".*cannot import name '_C'.*")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    from .checkpoint import sha256_of
    from .export import export

    checkpoint = url = None
    if args.download:
        url = spec.url
        checkpoint = download(url, args.checkpoint_dir / spec.checkpoint_file)
        if spec.git_blob_sha1:
            from .checkpoint import git_blob_sha1
            if git_blob_sha1(checkpoint) != spec.git_blob_sha1:
                raise CheckpointError(f"{checkpoint} is not the published {spec.name} checkpoint (git blob id "
                                      f"{git_blob_sha1(checkpoint)}, expected {spec.git_blob_sha1}); delete it and download again")
    elif args.checkpoint:
        checkpoint = args.checkpoint
    if checkpoint is not None and args.sha256:
        got = sha256_of(checkpoint)
        if got != args.sha256.lower():
            raise CheckpointError(f"{checkpoint} has sha256 {got}, expected {args.sha256}; delete it and download again")
    if args.threads:
        torch.set_num_threads(args.threads)
    out, model = export(spec, args.out, precision=args.precision, image_size=args.image_size,
                        checkpoint=checkpoint, checkpoint_url=url,
                        seed=args.seed if args.random_init else None,
                        object_score_bias=args.random_object_bias)
    if args.random_init:
        log.warning("RANDOM WEIGHTS in %s (seed %d): the masks it makes are meaningless", out, args.seed)
    log.info("export written to %s", out)
    if args.verify:
        from .verify import verify_export
        results = verify_export(model, out, args.precision, threads=args.threads)
        for r in results:
            print(r.row())
        failed = [r for r in results if not r.ok]
        if failed:
            log.error("%d of %d outputs differ from PyTorch beyond tolerance", len(failed), len(results))
            return 1
        log.info("all %d outputs match PyTorch", len(results))
    return 0
