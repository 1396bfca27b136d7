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
from backend.serving import leftovers
from backend.serving.errors import BackendError
from backend.settings import Settings

logger = logging.getLogger(__name__)


class ModelNotReady(BackendError):
    """The model is still loading (503, retry) or failed to load (503: unavailable until fixed; /health says why)."""

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
        self._predictor: VideoPredictor | None = None
        self._error: str | None = None
        self._ready = threading.Event()
        self.load_seconds: float | None = None
        self.manifest: dict = {}
        try:  # a missing or corrupt model folder is reported on /health (503), not a crash loop
            self.manifest = _read_manifest(Path(settings.model_dir))
        except ValueError as e:
            self._error = str(e)
            logger.error("%s", e)
        self.version = settings.model_version or (model_version(self.manifest) if self.manifest else "unavailable")
        self.name = self.manifest.get("model", "sam2")

    def start(self) -> None:
        if self._error is not None:
            self._ready.set()
            return
        threading.Thread(target=self._load, name="model-load", daemon=True).start()

    def _load(self) -> None:
        t0 = time.monotonic()
        s = self.settings
        try:
            check_writable(Path(s.data_dir) / "spill", "DATA_DIR")
            leftovers.clean_spill(s.data_dir)  # spill folders of a crashed run (only if this process owns DATA_DIR/spill)
            self._predictor = VideoPredictor(EngineSettings(
                model_dir=s.model_dir, precision=s.precision, threads=s.ov_threads,
                feature_cache_bytes=s.feature_cache_bytes, spill_dir=Path(s.data_dir) / "spill",
                ov_cache_dir=s.ov_cache_dir, device=s.device, conditioned_cache_bytes=s.conditioned_cache_bytes,
                max_spill_bytes=s.max_spill_bytes, attention_batch=s.attention_batch))
            self.load_seconds = time.monotonic() - t0
            logger.info("model %s loaded in %.1f s, inference precision %s", self.version, self.load_seconds,
                        self._predictor.runtime.precision)
        except ValueError as e:  # ours: already names the setting and what to do
            self._error = str(e)
            logger.error("model %s failed to load: %s", self.version, e)
        except Exception as e:  # OpenVINO's: keep its first line, say which setting and what to do
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            self._error = (f"the model in MODEL_DIR={str(s.model_dir)!r} could not be loaded ({type(e).__name__}: "
                           f"{first}); its files may be truncated or corrupt: export it again with "
                           "`python -m model_export`, then restart")
            logger.exception("model %s failed to load", self.version)
        finally:
            self._ready.set()

    def wait_loaded(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the load to end (ready or failed); whether it has."""
        return self._ready.wait(timeout)

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
            raise ModelNotReady(f"the model failed to load ({self._error}); fix it and restart", status=503)
        raise ModelNotReady("the model is still loading; retry in a few seconds")


def _read_manifest(model_dir: Path) -> dict:
    """The export's manifest; ValueError naming MODEL_DIR and what to do when it is missing or unreadable."""
    path = model_dir / "manifest.json"
    if not model_dir.is_dir():
        raise ValueError(f"MODEL_DIR={str(model_dir)!r} does not exist; mount the folder made by "
                         "`python -m model_export --out DIR` there, then restart")
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"MODEL_DIR={str(model_dir)!r} holds no manifest.json; point it at a folder made by "
                         "`python -m model_export --out DIR`, then restart") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"MODEL_DIR={str(model_dir)!r} has an unreadable manifest.json ({type(e).__name__}: "
                         f"{e}); export the model again with `python -m model_export`, then restart") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"MODEL_DIR={str(model_dir)!r} has a manifest.json that is not a JSON object; export the "
                         "model again with `python -m model_export`, then restart")
    return manifest


def check_writable(folder: Path, setting: str) -> None:
    """Create `folder` and write a probe file there; ValueError naming `setting` when that fails."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{threading.get_ident()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{folder} is not writable ({e.strerror or type(e).__name__}); set {setting} to a "
                         "writable folder") from None
