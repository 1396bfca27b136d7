"""Scale-out on Ray Serve (optional extra, `requirements-ray.txt`): one front, N tracking replicas.

Dependencies point down only: this package -> backend.serving -> backend.engine. What is specific to an annotation
tool (the Label Studio service a replica runs, how the front reads a request's task) is injected by the wiring:
`backend.app.build_service` (the front) and `backend.serve_app.build_app` (the replicas).

- `host.SessionHost`: what one replica runs: an adapter's service on the shared tracking core (engine, per-task
  sessions, feature cache, background jobs, writes into the tool) behind a small task-keyed interface. No Ray import.
- `deployment`: the Ray Serve deployment (`TaskTracker`) around a `SessionHost`; a task's session is Serve's
  multiplexed "model" (the task id is the multiplexed model id), so Serve routes every request for a task to the
  replica holding its session, and LRU-evicts at `MAX_SESSIONS` per replica. The only module here importing Ray.
- `front.RayTrackingClient`: the Flask app's service in `TRACKING_BACKEND=ray` mode: same methods as the
  in-process service, forwarding each task's work over Serve's HTTP proxy (`serve_multiplexed_model_id` header).
  No Ray import, so the front runs from the ordinary runtime image.
"""
