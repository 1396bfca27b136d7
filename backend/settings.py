"""Service settings, read once from the environment into a frozen object (fail fast, say what to set).

Every variable (units in the name or the comment; defaults in brackets):

- MODEL_DIR (required): a folder exported by `python -m model_export` (holds manifest.json). A folder that is
  missing or corrupt does not stop the process (no crash loop): /health answers 503 with the error.
- PRECISION [auto]: OpenVINO inference precision, auto | f32 | bf16 (auto lets the CPU plugin pick; bf16 where the
  CPU supports it). OV_THREADS [0 = all cores]. OV_CACHE_DIR: OpenVINO compiled-model cache (faster restarts).
- FEATURE_CACHE_MB [1024]: image features kept in RAM (LRU), shared by all sessions.
- MAX_SESSIONS [8]: tracked videos kept in memory (LRU); an evicted task is rebuilt from its annotations on demand.
- DATA_DIR [<tmp>/sam2-ls]: scratch space (older per-frame memories spill to DATA_DIR/spill).
- PREDICT_TIME_BUDGET_S [20]: how long a batch /predict waits for propagation before it answers with what it has
  (LS gives /predict 100 s); the rest goes on in the background and is written into LS as a prediction.
- Engine (engine-core): INTERACTIVE_WAIT_S [0]: how long an interactive /predict (a click) waits for propagation
  (at most PREDICT_TIME_BUDGET_S); 0 answers as soon as the clicked frame's masks are ready, with whatever is tracked
  already, while propagation goes on in the background. DEVICE [CPU]: OpenVINO device (CPU, GPU, NPU, AUTO, or per
  graph, see backend.engine.runtime). COND_CACHE_MB [128]: memory-conditioned features of recent frames, so a click
  on a tracked frame skips memory attention. MAX_SPILL_MB [8192]: per-task cap of memories spilled to DATA_DIR/spill.
  ATTENTION_BATCH [auto]: objects per memory-attention call; auto: as many as 1/16 of the memory limit holds (1-5,
  see backend.engine.batching).
- ANSWER_CACHE_MB [64]: JSON text of unchanged brush results (LRU, all tasks), so an answer is not re-serialised.
- INTERACTIVE_MASK_FORMAT [png] | rle: how a click's answer carries brush masks: png = `value.maskDataURL` (a PNG
  data URL the editor draws and saves as RLE; 2.6-13x smaller), rle = `value.rle`. Stored predictions are always RLE.
- WRITE_INTERVAL_S [15]: how often a running background job writes its growing prediction into LS.
- JOB_WORKERS [2]: propagation jobs that run at once.
- BASIC_AUTH_USER / BASIC_AUTH_PASS: when both are set, every route but /health needs HTTP basic auth.
- MODEL_VERSION: the model_version reported to LS [derived from the manifest: model, precision, weights].
- LOG_LEVEL [INFO]. PORT [9090] and THREADS [8] are read by docker/entrypoint.sh (gunicorn), WORKERS must be 1.
- Media (see `media_from_env` below): LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY (legacy token or personal access
  token), MEDIA_CACHE_DIR, MEDIA_CACHE_MAX_MB, MEDIA_MAX_FILE_MB, ALLOWED_MEDIA_HOSTS, LOCAL_FILES_DOCUMENT_ROOT,
  MEDIA_TIMEOUT_S, MEDIA_TOTAL_TIMEOUT_S, MEDIA_DECODE_MAX_PIXELS, MEDIA_MAX_VIDEO_FRAMES.
- CVAT tracker function (see `CvatSettings`): CVAT_FUNCTION, CVAT_FUNCTION_NAME, CVAT_MAX_SESSIONS,
  CVAT_SESSIONS_MAX_MB, CVAT_SESSION_TTL_S, CVAT_MAX_BODY_MB, CVAT_MAX_IMAGE_MPIX, CVAT_MAX_SHAPES.
- Limits (caps, lock waits, webhook rate, LS write retries, health port): see backend.serving.limits.Limits.
- Scale-out (see RaySettings below): TRACKING_BACKEND [inprocess] | ray, RAY_SERVE_URL, RAY_REPLICAS,
  RAY_REPLICA_CPUS, RAY_MAX_ONGOING_REQUESTS, RAY_REQUEST_TIMEOUT_S.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backend.serving.limits import Limits
from backend.serving.limits import _num as _read_number  # the one reader of numeric variables (ValueError)
from backend.serving.media import MediaSettings


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it and says what to set."""


def _num(env: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    """The variable `name` as a number >= `minimum` (`default` when unset); SettingsError naming it otherwise."""
    try:
        return _read_number(env, name, default, minimum=minimum, integer=integer)
    except ValueError as e:
        raise SettingsError(str(e)) from None


def _attention_batch(env: Mapping[str, str]) -> int | None:
    """ATTENTION_BATCH: `auto` (or unset) -> None (the engine decides from the memory limit), else an integer >= 1."""
    if env.get("ATTENTION_BATCH", "").strip().lower() in ("", "auto"):
        return None
    return int(_num(env, "ATTENTION_BATCH", 1, minimum=1, integer=True))


def _mask_format(env: Mapping[str, str]) -> str:
    """INTERACTIVE_MASK_FORMAT: png (default) or rle."""
    value = env.get("INTERACTIVE_MASK_FORMAT", "png").strip().lower() or "png"
    if value not in ("png", "rle"):
        raise SettingsError(f"INTERACTIVE_MASK_FORMAT={value!r} is not one of png, rle (how a click's answer carries "
                            "brush masks)")
    return value


# ---- CVAT tracker function (backend/cvat) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CvatSettings:
    """The CVAT tracker function and its nuclio-dashboard endpoints (defaults in brackets).

    CVAT_FUNCTION [on]: answer CVAT's nuclio-dashboard API (off: the routes 404). CVAT_FUNCTION_NAME [sam2-tracker]:
    the function id CVAT lists. CVAT_MAX_SESSIONS [64] and CVAT_SESSIONS_MAX_MB [2048]: tracking sessions kept
    (LRU); CVAT_SESSION_TTL_S [3600]: an idle session is closed after this. A state whose session is gone is
    re-initialised from its last box. CVAT_MAX_BODY_MB [64], CVAT_MAX_IMAGE_MPIX [40], CVAT_MAX_SHAPES [64]:
    per-call caps (413 / 400 beyond them).
    """

    enabled: bool = True
    function_name: str = "sam2-tracker"
    max_sessions: int = 64
    sessions_max_bytes: int = 2048 << 20
    session_ttl_s: float = 3600.0
    max_body_bytes: int = 64 << 20
    max_image_pixels: int = 40_000_000
    max_shapes: int = 64
    model_wait_s: float = 60.0
    busy_timeout_s: float = 30.0
    stream_keep_frames: int = 2
    http_port: int = 9090

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> CvatSettings:
        flag = env.get("CVAT_FUNCTION", "on").strip().lower() or "on"
        if flag not in ("on", "off", "1", "0", "true", "false"):
            raise SettingsError(f"CVAT_FUNCTION={flag!r} is not on or off")
        name = env.get("CVAT_FUNCTION_NAME", "sam2-tracker").strip() or "sam2-tracker"
        if not all(c.isalnum() or c in "_.-" for c in name) or len(name) > 63:
            raise SettingsError(f"CVAT_FUNCTION_NAME={name!r}: use letters, digits, '_', '.', '-' (CVAT's function "
                                "id pattern), at most 63")
        return cls(
            enabled=flag in ("on", "1", "true"),
            function_name=name,
            max_sessions=int(_num(env, "CVAT_MAX_SESSIONS", 64, minimum=1, integer=True)),
            sessions_max_bytes=int(_num(env, "CVAT_SESSIONS_MAX_MB", 2048, minimum=1) * (1 << 20)),
            session_ttl_s=_num(env, "CVAT_SESSION_TTL_S", 3600.0, minimum=1.0),
            max_body_bytes=int(_num(env, "CVAT_MAX_BODY_MB", 64, minimum=1) * (1 << 20)),
            max_image_pixels=int(_num(env, "CVAT_MAX_IMAGE_MPIX", 40, minimum=0.01) * 1_000_000),
            max_shapes=int(_num(env, "CVAT_MAX_SHAPES", 64, minimum=1, integer=True)),
            http_port=int(_num(env, "PORT", 9090, minimum=1, integer=True)),
        )


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    precision: str = "auto"
    ov_threads: int = 0
    ov_cache_dir: Path | None = None
    feature_cache_bytes: int = 1 << 30
    max_sessions: int = 8
    data_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "sam2-ls")
    predict_time_budget_s: float = 20.0
    write_interval_s: float = 15.0
    job_workers: int = 2
    basic_auth: tuple[str, str] | None = None
    model_version: str | None = None
    log_level: str = "INFO"
    media: MediaSettings | None = None
    cvat: CvatSettings = field(default_factory=CvatSettings)
    limits: Limits = field(default_factory=Limits)
    ray: RaySettings = field(default_factory=lambda: RaySettings())
    # ---- engine (engine-core) ----
    interactive_wait_s: float = 0.0
    device: str = "CPU"
    conditioned_cache_bytes: int = 128 << 20
    attention_batch: int | None = None
    max_spill_bytes: int = 8 << 30
    # ---- answers (lsclick) ----
    answer_cache_bytes: int = 64 << 20
    interactive_mask_format: str = "png"

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        model_dir = env.get("MODEL_DIR", "").strip()
        if not model_dir:
            raise SettingsError("MODEL_DIR is not set; set it to a folder made by `python -m model_export --out DIR`")
        precision = env.get("PRECISION", "auto").strip().lower() or "auto"
        if precision not in ("auto", "f32", "bf16"):
            raise SettingsError(f"PRECISION={precision!r} is not one of auto, f32, bf16")
        user, password = env.get("BASIC_AUTH_USER", ""), env.get("BASIC_AUTH_PASS", "")
        if bool(user) != bool(password):
            raise SettingsError("set both BASIC_AUTH_USER and BASIC_AUTH_PASS, or neither")
        workers = env.get("WORKERS", "1").strip() or "1"
        if workers != "1":
            raise SettingsError(f"WORKERS={workers!r}: tracking sessions live in one process, so WORKERS must be 1 "
                                "(use THREADS for concurrency)")
        level = env.get("LOG_LEVEL", "INFO").strip().upper() or "INFO"
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"LOG_LEVEL={level!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        try:
            media = media_from_env(env)
        except ValueError as e:
            raise SettingsError(str(e)) from None
        try:
            limits = Limits.from_env(env)
        except ValueError as e:
            raise SettingsError(str(e)) from None
        data_dir = Path(env.get("DATA_DIR") or Path(tempfile.gettempdir()) / "sam2-ls")
        return cls(
            model_dir=Path(model_dir),
            precision=precision,
            ov_threads=int(_num(env, "OV_THREADS", 0, minimum=0, integer=True)),
            ov_cache_dir=Path(env["OV_CACHE_DIR"]) if env.get("OV_CACHE_DIR") else None,
            feature_cache_bytes=int(_num(env, "FEATURE_CACHE_MB", 1024, minimum=1) * (1 << 20)),
            max_sessions=int(_num(env, "MAX_SESSIONS", 8, minimum=1, integer=True)),
            data_dir=data_dir,
            predict_time_budget_s=_num(env, "PREDICT_TIME_BUDGET_S", 20.0, minimum=0.5),
            write_interval_s=_num(env, "WRITE_INTERVAL_S", 15.0, minimum=0.5),
            job_workers=int(_num(env, "JOB_WORKERS", 2, minimum=1, integer=True)),
            basic_auth=(user, password) if user else None,
            model_version=env.get("MODEL_VERSION") or None,
            log_level=level,
            media=media,
            cvat=CvatSettings.from_env(env),
            limits=limits,
            ray=RaySettings.from_env(env),
            interactive_wait_s=_num(env, "INTERACTIVE_WAIT_S", 0.0, minimum=0.0),
            device=env.get("DEVICE", "CPU").strip() or "CPU",
            conditioned_cache_bytes=int(_num(env, "COND_CACHE_MB", 128, minimum=0) * (1 << 20)),
            attention_batch=_attention_batch(env),
            max_spill_bytes=int(_num(env, "MAX_SPILL_MB", 8192, minimum=0) * (1 << 20)),
            answer_cache_bytes=int(_num(env, "ANSWER_CACHE_MB", 64, minimum=0) * (1 << 20)),
            interactive_mask_format=_mask_format(env),
        )


# ---- scale-out on Ray Serve (backend/scale); nothing here imports Ray ------------------------------------------
@dataclass(frozen=True)
class RaySettings:
    """Where the tracking runs: in this process (default) or on Ray Serve replicas (backend/scale).

    - TRACKING_BACKEND [inprocess] | ray: in `ray` mode this process is only the Label Studio front (auth, protocol,
      limits) and forwards each task's work to the replicas, with the task id as Serve's multiplexed model id.
    - RAY_SERVE_URL [http://127.0.0.1:8000/sam2]: the Serve HTTP proxy + the application's route prefix (front only).
    - RAY_REPLICAS [2]: tracking replicas; RAY_REPLICA_CPUS [2]: CPUs Ray reserves per replica (match OV_THREADS).
    - RAY_MAX_ONGOING_REQUESTS [16]: requests one replica takes at once (Serve's max_ongoing_requests).
    - RAY_REQUEST_TIMEOUT_S [95]: how long the front waits for a replica (under LS's 100 s /predict timeout).
    Per replica, MAX_SESSIONS is Serve's max_num_models_per_replica and OV_THREADS / JOB_WORKERS keep their meaning.
    """

    enabled: bool = False
    serve_url: str = "http://127.0.0.1:8000/sam2"
    replicas: int = 2
    replica_cpus: float = 2.0
    max_ongoing_requests: int = 16
    request_timeout_s: float = 95.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> RaySettings:
        mode = env.get("TRACKING_BACKEND", "inprocess").strip().lower() or "inprocess"
        if mode not in ("inprocess", "ray"):
            raise SettingsError(f"TRACKING_BACKEND={mode!r} is not one of inprocess, ray")
        url = env.get("RAY_SERVE_URL", cls.serve_url).strip().rstrip("/") or cls.serve_url
        if not url.startswith(("http://", "https://")):
            raise SettingsError(f"RAY_SERVE_URL={url!r} is not an http(s) URL; set it to the Serve proxy and route "
                                "prefix, e.g. http://ray-head:8000/sam2")
        return cls(
            enabled=mode == "ray",
            serve_url=url,
            replicas=int(_num(env, "RAY_REPLICAS", 2, minimum=1, integer=True)),
            replica_cpus=_num(env, "RAY_REPLICA_CPUS", 2.0, minimum=0.1),
            max_ongoing_requests=int(_num(env, "RAY_MAX_ONGOING_REQUESTS", 16, minimum=1, integer=True)),
            request_timeout_s=_num(env, "RAY_REQUEST_TIMEOUT_S", 95.0, minimum=1.0),
        )


# ---- media security and limits (backend/serving/media.py; README "Media security and limits") ----------------------
def media_from_env(env: Mapping[str, str] = os.environ) -> MediaSettings:
    """MediaSettings from the environment; SettingsError naming the variable when a value is malformed.

    MEDIA_CACHE_MAX_MB [2048]: bytes on disk for cached media, in-flight downloads included (a task needing more: 413).
    MEDIA_MAX_FILE_MB [1024]: one file. MEDIA_TIMEOUT_S [30]: per connect and per read.
    MEDIA_TOTAL_TIMEOUT_S [600]: one whole download (and a wait for another request's download of the same file).
    MEDIA_DECODE_MAX_PIXELS [33177600 = 7680x4320]: the largest frame (width x height) the media decoder opens, read
    from the header first: a guard against decompression bombs (400). Not the largest frame the backend tracks: that
    work cap is MAX_FRAME_PIXELS [4K] (backend.serving.limits). MEDIA_MAX_FRAME_PIXELS is its deprecated old name
    (still read, with a warning).
    MEDIA_MAX_VIDEO_FRAMES [100000]: frames of one video (more: 400). ALLOWED_MEDIA_HOSTS: comma/space separated.
    """
    mb = 1 << 20
    try:
        return MediaSettings(
            ls_url=env.get("LABEL_STUDIO_URL") or None,
            api_key=env.get("LABEL_STUDIO_API_KEY") or None,
            cache_dir=Path(env.get("MEDIA_CACHE_DIR") or Path(tempfile.gettempdir()) / "sam2-ls-media"),
            max_cache_bytes=int(_num(env, "MEDIA_CACHE_MAX_MB", 2048, minimum=1) * mb),
            max_file_bytes=int(_num(env, "MEDIA_MAX_FILE_MB", 1024, minimum=0.001) * mb),
            allowed_hosts=tuple(re.split(r"[,\s]+", env.get("ALLOWED_MEDIA_HOSTS", "").strip())),
            local_files_root=env.get("LOCAL_FILES_DOCUMENT_ROOT") or None,
            timeout_s=_num(env, "MEDIA_TIMEOUT_S", 30.0, minimum=0.1),
            total_timeout_s=_num(env, "MEDIA_TOTAL_TIMEOUT_S", 600.0, minimum=1),
            max_frame_pixels=int(_num(env, _decode_pixels_name(env), 7680 * 4320, minimum=1, integer=True)),
            max_video_frames=int(_num(env, "MEDIA_MAX_VIDEO_FRAMES", 100_000, minimum=1, integer=True)),
        )
    except SettingsError:
        raise
    except ValueError as e:
        raise SettingsError(str(e)) from None


def _decode_pixels_name(env: Mapping[str, str]) -> str:
    """MEDIA_DECODE_MAX_PIXELS, or its old name MEDIA_MAX_FRAME_PIXELS when only that is set (with a warning: next to
    MAX_FRAME_PIXELS, the work cap, the old name read like the same setting)."""
    if env.get("MEDIA_MAX_FRAME_PIXELS", "").strip() and not env.get("MEDIA_DECODE_MAX_PIXELS", "").strip():
        logging.getLogger(__name__).warning(
            "MEDIA_MAX_FRAME_PIXELS is deprecated: it is the media decoder's guard against decompression bombs, now "
            "named MEDIA_DECODE_MAX_PIXELS (the largest frame tracked is MAX_FRAME_PIXELS); rename it")
        return "MEDIA_MAX_FRAME_PIXELS"
    return "MEDIA_DECODE_MAX_PIXELS"
