"""Load the engine once per process, in the background, so /health and /setup answer at once.

`version` comes from the manifest alone (no compile): model name, stored precision and a weights fingerprint, plus
`-random` for random-init exports, so LS keeps predictions of different models apart.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path

from backend.engine import EngineSettings, VideoPredictor
from backend.serving.errors import BackendError
from backend.settings import Settings

logger = logging.getLogger(__name__)


class ModelNotReady(BackendError):
    """The model is still loading (503, retry) or failed to load (500)."""

    status = 503


def model_version(manifest: dict) -> str:
    weights = manifest.get("weights") or {}
    tag = (weights.get("sha256") or weights.get("fingerprint") or "")[:8]
    version = f"{manifest.get('model', 'sam2')}-{manifest.get('precision', '')}-{manifest.get('image_size', '')}"
    version += f"-{tag}" if tag else ""
    return version + ("-random" if manifest.get("random_weights") else "")


class ModelHolder:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.manifest = json.loads((Path(settings.model_dir) / "manifest.json").read_text())
        self.version = settings.model_version or model_version(self.manifest)
        self.name = self.manifest.get("model", "sam2")
        self._predictor: VideoPredictor | None = None
        self._error: str | None = None
        self._ready = threading.Event()
        self.load_seconds: float | None = None

    def start(self) -> None:
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.monotonic()
        s = self.settings
        try:
            self._predictor = VideoPredictor(EngineSettings(
                model_dir=s.model_dir, precision=s.precision, threads=s.ov_threads,
                feature_cache_bytes=s.feature_cache_bytes, spill_dir=Path(s.data_dir) / "spill",
                ov_cache_dir=s.ov_cache_dir, device=s.device, conditioned_cache_bytes=s.conditioned_cache_bytes,
                max_spill_bytes=s.max_spill_bytes))
            self.load_seconds = time.monotonic() - t0
            logger.info("model %s loaded in %.1f s, inference precision %s", self.version, self.load_seconds,
                        self._predictor.runtime.precision)
        except Exception as e:
            self._error = f"{type(e).__name__}: {e}"
            logger.exception("model %s failed to load", self.version)
        finally:
            self._ready.set()

    @property
    def state(self) -> str:
        if not self._ready.is_set():
            return "loading"
        return "ready" if self._predictor is not None else "failed"

    @property
    def error(self) -> str | None:
        return self._error

    def get(self, timeout: float = 120.0) -> VideoPredictor:
        """The loaded predictor; waits up to `timeout` s while it loads."""
        self._ready.wait(timeout)
        if self._predictor is not None:
            return self._predictor
        if self._error is not None:
            raise ModelNotReady(f"the model failed to load ({self._error}); fix MODEL_DIR and restart", status=500)
        raise ModelNotReady("the model is still loading; retry in a few seconds")
