"""Resource limits every front door enforces: one frozen object read from the environment (fail fast, name the variable).

Every cap answers with a 4xx that names the setting to raise (`LimitExceeded`): 413 for bodies, 400 for the rest.
Defaults are sized for the largest interactive request we expect: a 200-frame x 10-object context whose brush masks
LS echoes back (about 2,000 RLE results of a few KB each at 1080p -> ~40 MB of JSON).

Variables (defaults in brackets):
- MAX_BODY_MB [64]: largest request body; bigger -> 413 before it is read.
- BODY_TIMEOUT_S [30]: the whole request body must arrive within this time (a client dripping its body would
  otherwise hold a request thread forever) -> 408.
- HEADER_TIMEOUT_S [10]: the request line and headers must arrive within this time (a client dripping its headers
  would otherwise hold a gunicorn thread forever; see backend.serving.gworker) -> 408 and the connection closed.
- MAX_JSON_DEPTH [64]: deepest nesting of arrays/objects in a JSON body (LS sends < 10) -> 400.
- MAX_OBJECTS [32]: tracked objects one annotation asks for on a task (several annotators on one task each have
  their own) -> 400.
- MAX_POINTS [256]: keypoint and box prompts of one annotation on a task -> 400.
- MAX_TASK_OBJECTS [128]: objects of all annotations of one task held at once -> 400.
- MAX_FRAMES [20000]: frames per task (checked on the frame list before any download, on the video after opening).
- MAX_FRAME_PIXELS [8294400 = 3840 x 2160]: the largest frame (width x height) the backend tracks: a work cap (encoder
  input, masks and memory grow with it) -> 400. The media decoder's own guard against decompression bombs is
  MEDIA_DECODE_MAX_PIXELS [8K] (backend.settings.media_from_env), checked first, from the file header.
- TASK_LOCK_WAIT_S [30]: how long a request waits for another request on the same task -> 409 with Retry-After.
- SESSION_MAX_MB [2048], SESSION_TTL_S [3600]: bytes of tracked masks kept over all task sessions, idle lifetime.
- WEBHOOK_SECRET: a shared secret LS sends in the `X-Webhook-Secret` header (webhooks configured with headers);
  such webhooks are trusted like basic-auth ones. WEBHOOK_TASK_INTERVAL_S [10]: an unauthenticated webhook costs at
  most one LS read per task per interval. WEBHOOK_RATE_PER_MIN [30]: token bucket over all unauthenticated webhooks.
  WEBHOOK_QUEUE_MAX [256]: tasks waiting for an unauthenticated webhook to be processed (more are dropped, logged).
- LS_WRITE_RETRY_S [300]: how long a job keeps retrying a failed prediction write (backoff 1 s doubling to 30 s).
- HEALTH_PORT [0 = off; docker/entrypoint.sh sets 9091]: a dedicated /health process (see backend.serving.health),
  answering while every request thread is busy.
- WORKER_NICE [10; 0 = off, at most 19]: with HEALTH_PORT on, the worker process (engine, request and job threads) runs
  at this nice value, the /health process at the normal one, so a probe never queues behind the engine on busy
  cores (see backend.serving.priority).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from backend.serving.errors import BackendError

WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"


class LimitExceeded(BackendError):
    """A request exceeds a configured cap: 400 (413 for bodies); the message names the setting."""

    status = 400


def _num(env: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False) -> float:
    raw = str(env.get(name, "")).strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name}={raw!r} is not {kind}; set it to {kind} >= {minimum} or unset it") from None
    if not value >= minimum:
        raise ValueError(f"{name}={raw!r} is too small; set it to at least {minimum} or unset it")
    return value


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 64 << 20
    max_json_depth: int = 64
    body_timeout_s: float = 30.0
    header_timeout_s: float = 10.0
    max_objects: int = 32
    max_points: int = 256
    max_task_objects: int = 128
    max_frames: int = 20000
    max_frame_pixels: int = 3840 * 2160
    task_lock_wait_s: float = 30.0
    session_max_bytes: int = 2048 << 20
    session_ttl_s: float = 3600.0
    webhook_secret: str | None = None
    webhook_task_interval_s: float = 10.0
    webhook_rate_per_min: float = 30.0
    webhook_queue_max: int = 256
    ls_write_retry_s: float = 300.0
    health_port: int = 0
    worker_nice: int = 10

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Limits:
        """Read the variables above; ValueError (naming the variable) on a bad value."""
        i = lambda name, d, lo=1: int(_num(env, name, d, minimum=lo, integer=True))  # noqa: E731
        port = i("HEALTH_PORT", cls.health_port, 0)
        if port > 65535:
            raise ValueError(f"HEALTH_PORT={port} is not a TCP port; set 1-65535, or 0 to turn it off")
        secret = str(env.get("WEBHOOK_SECRET", "")).strip() or None
        if secret is not None and len(secret) < 16:
            raise ValueError("WEBHOOK_SECRET is shorter than 16 characters; set a long random value "
                             "(e.g. `openssl rand -hex 32`) or unset it")
        return cls(
            max_body_bytes=int(_num(env, "MAX_BODY_MB", 64, minimum=0.001) * (1 << 20)),
            max_json_depth=i("MAX_JSON_DEPTH", cls.max_json_depth, 2),
            body_timeout_s=_num(env, "BODY_TIMEOUT_S", cls.body_timeout_s, minimum=0.1),
            header_timeout_s=_num(env, "HEADER_TIMEOUT_S", cls.header_timeout_s, minimum=1.0),
            max_objects=i("MAX_OBJECTS", cls.max_objects),
            max_points=i("MAX_POINTS", cls.max_points),
            max_task_objects=i("MAX_TASK_OBJECTS", cls.max_task_objects),
            max_frames=i("MAX_FRAMES", cls.max_frames),
            max_frame_pixels=i("MAX_FRAME_PIXELS", cls.max_frame_pixels),
            task_lock_wait_s=_num(env, "TASK_LOCK_WAIT_S", cls.task_lock_wait_s, minimum=0.0),
            session_max_bytes=int(_num(env, "SESSION_MAX_MB", 2048, minimum=1) * (1 << 20)),
            session_ttl_s=_num(env, "SESSION_TTL_S", cls.session_ttl_s, minimum=1.0),
            webhook_secret=secret,
            webhook_task_interval_s=_num(env, "WEBHOOK_TASK_INTERVAL_S", cls.webhook_task_interval_s, minimum=0.0),
            webhook_rate_per_min=_num(env, "WEBHOOK_RATE_PER_MIN", cls.webhook_rate_per_min, minimum=1.0),
            webhook_queue_max=i("WEBHOOK_QUEUE_MAX", cls.webhook_queue_max),
            ls_write_retry_s=_num(env, "LS_WRITE_RETRY_S", cls.ls_write_retry_s, minimum=0.0),
            health_port=port,
            worker_nice=min(i("WORKER_NICE", cls.worker_nice, 0), 19),
        )

    # ---- checks (each raises LimitExceeded naming the setting) ----------------------------------------------------
    def check_frames(self, n: int, task_id: object) -> None:
        if n > self.max_frames:
            raise LimitExceeded(f"task {task_id} has {n} frames, more than MAX_FRAMES={self.max_frames}; split the "
                                "video into shorter tasks or raise MAX_FRAMES")

    def check_frame_size(self, width: int, height: int, task_id: object) -> None:
        if width * height > self.max_frame_pixels:
            raise LimitExceeded(f"task {task_id} has {width}x{height} frames, larger than the backend tracks "
                                f"(MAX_FRAME_PIXELS={self.max_frame_pixels} pixels, a work cap); downscale the media "
                                "or raise MAX_FRAME_PIXELS")

    def check_objects(self, n: int, task_id: object) -> None:
        if n > self.max_objects:
            raise LimitExceeded(f"task {task_id}: this annotation would track {n} objects, more than "
                                f"MAX_OBJECTS={self.max_objects}; delete some regions or raise MAX_OBJECTS")

    def check_task_objects(self, n: int, task_id: object) -> None:
        if n > self.max_task_objects:
            raise LimitExceeded(f"task {task_id} would hold {n} objects over all its annotations, more than "
                                f"MAX_TASK_OBJECTS={self.max_task_objects}; delete regions in some annotations or "
                                "raise MAX_TASK_OBJECTS")

    def check_points(self, n: int, task_id: object) -> None:
        if n > self.max_points:
            raise LimitExceeded(f"task {task_id}: this annotation has {n} keypoint/box prompts, more than MAX_POINTS="
                                f"{self.max_points}; delete some or raise MAX_POINTS")
