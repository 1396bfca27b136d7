"""Service settings, read once from the environment into a frozen object (fail fast, say what to set).

Every variable (units in the name or the comment; defaults in brackets):

- MODEL_DIR (required): a folder exported by `python -m model_export` (holds manifest.json).
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
- WRITE_INTERVAL_S [15]: how often a running background job writes its growing prediction into LS.
- JOB_WORKERS [2]: propagation jobs that run at once.
- BASIC_AUTH_USER / BASIC_AUTH_PASS: when both are set, every route but /health needs HTTP basic auth.
- MODEL_VERSION: the model_version reported to LS [derived from the manifest: model, precision, weights].
- LOG_LEVEL [INFO]. PORT [9090] and THREADS [8] are read by docker/entrypoint.sh (gunicorn), WORKERS must be 1.
- Media (see backend.serving.media.MediaSettings.from_env): LABEL_STUDIO_URL, LABEL_STUDIO_API_KEY (legacy token or
  personal access token), MEDIA_CACHE_DIR, MEDIA_CACHE_MAX_MB, MEDIA_MAX_FILE_MB, ALLOWED_MEDIA_HOSTS,
  LOCAL_FILES_DOCUMENT_ROOT, MEDIA_TIMEOUT_S.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from backend.serving.media import MediaSettings


class SettingsError(ValueError):
    """An environment variable is missing or malformed; the message names it and says what to set."""


def _num(env: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise SettingsError(f"{name}={raw!r} is not {kind}; set it to {kind} >= {minimum} or unset it") from None
    if value < minimum:
        raise SettingsError(f"{name}={raw!r} is too small; set it to at least {minimum} or unset it")
    return value


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
    # ---- engine (engine-core) ----
    interactive_wait_s: float = 0.0
    device: str = "CPU"
    conditioned_cache_bytes: int = 128 << 20
    max_spill_bytes: int = 8 << 30

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Settings:
        model_dir = env.get("MODEL_DIR", "").strip()
        if not model_dir:
            raise SettingsError("MODEL_DIR is not set; set it to a folder made by `python -m model_export --out DIR`")
        if not (Path(model_dir) / "manifest.json").is_file():
            raise SettingsError(f"MODEL_DIR={model_dir!r} holds no manifest.json; point it at a folder made by "
                                "`python -m model_export --out DIR`")
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
            media = MediaSettings.from_env(env)
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
            interactive_wait_s=_num(env, "INTERACTIVE_WAIT_S", 0.0, minimum=0.0),
            device=env.get("DEVICE", "CPU").strip() or "CPU",
            conditioned_cache_bytes=int(_num(env, "COND_CACHE_MB", 128, minimum=0) * (1 << 20)),
            max_spill_bytes=int(_num(env, "MAX_SPILL_MB", 8192, minimum=0) * (1 << 20)),
        )
