"""Serving layer shared by every front door (Label Studio today, CVAT and Ray Serve next).

Model holder, propagation jobs, media fetch + cache, the LS-origin token and errors with whose-fault statuses. It
depends on `backend.engine` only; adapters (`backend.ls`, ...) depend on it, never the other way round.
"""
