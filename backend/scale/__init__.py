"""Scale-out on Ray Serve (optional extra, `requirements-ray.txt`): one LS-facing front, N tracking replicas.

- `host.SessionHost`: what one replica runs: the ordinary `TrackingService` (engine, per-task sessions, feature
  cache, background jobs, writes into LS) behind a small task-keyed interface. No Ray import.
- `deployment`: the Ray Serve deployment (`TaskTracker`) around a `SessionHost`; a task's session is Serve's
  multiplexed "model" (the task id is the multiplexed model id), so Serve routes every request for a task to the
  replica holding its session, and LRU-evicts at `MAX_SESSIONS` per replica. The only module here importing Ray.
- `front.RayTrackingClient`: the Flask app's service in `TRACKING_BACKEND=ray` mode: same methods as
  `TrackingService`, forwarding each task's work over Serve's HTTP proxy (`serve_multiplexed_model_id` header).
  No Ray import, so the front runs from the ordinary runtime image.
"""
