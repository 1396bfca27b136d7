"""Community CVAT adapter: SAM 2 tracking on CVAT's own tracker contract, served by the shared engine.

- `tracker.CvatTracker`: CVAT's start/continue calls -> engine sessions on streaming frame sources.
- `dashboard.create_blueprint`: the nuclio-dashboard API CVAT uses to list and invoke functions (no nuclio needed).
- `nuclio_handler`: `init_context` / `handler` for a real nuclio function (serverless/sam2-tracker).

Dependencies point down only: this package -> backend.serving -> backend.engine.
"""
from __future__ import annotations


def create_cvat_blueprint(settings, model):
    """The dashboard blueprint over a new `CvatTracker` sharing `model` (a `ModelHolder`) with other front doors."""
    from backend.cvat.dashboard import create_blueprint
    from backend.cvat.tracker import CvatTracker

    tracker = CvatTracker(settings, model.get)
    bp = create_blueprint(settings, tracker, model)
    bp.tracker = tracker
    return bp
