"""Pure numpy + OpenVINO SAM 2.1 video tracking engine (no web, no Label Studio, no torch).

Public API: `VideoPredictor`, `EngineSettings`, `open_source`, `FrameResult`,
and the errors `PromptError`, `SessionBusy`, `FrameError`, `ModelError`.
Importing this package loads nothing heavy; `VideoPredictor(...)` compiles the graphs.
"""
from .frames import FrameError, ImageSequenceSource, VideoFileSource, open_source
from .model import ModelBundle, ModelError
from .predictor import EngineSettings, VideoPredictor
from .runtime import Aborted
from .session import FrameResult, PromptError, SessionBusy, VideoSession

__all__ = ["VideoPredictor", "EngineSettings", "open_source", "ImageSequenceSource", "VideoFileSource",
           "FrameResult", "VideoSession", "PromptError", "SessionBusy", "FrameError", "ModelError", "ModelBundle",
           "Aborted"]
