"""Ray Serve entry point (`import_path: backend.serve_app:build_app`): the tracking replicas of `backend.scale`,
each serving the Label Studio adapter's service, wired here as `backend.app` wires the in-process one.

Ray is imported only when the application is built (on the Serve driver and the replicas), never by the front.
"""
from __future__ import annotations

from backend.ls.factory import build_tracking_service


def build_app(args: dict | None = None):
    """Serve application builder; `args` as in `backend.scale.deployment.build_app` (`env`: replica settings)."""
    from backend.scale.deployment import build_app as build_deployment

    return build_deployment(args, service_factory=build_tracking_service)
