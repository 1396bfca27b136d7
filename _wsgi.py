"""Entry point: `gunicorn _wsgi:app` (production, see docker/entrypoint.sh) or `python _wsgi.py` (development).

Settings come from the environment once (see backend/settings.py for every variable); a wrong setting stops the
process with one line saying what to set. The model loads in a background thread: /health answers 503 until ready.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from backend.settings import Settings, SettingsError


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")


def make_app():
    try:
        settings = Settings.from_env()
    except SettingsError as e:
        logging.getLogger("_wsgi").critical("configuration error: %s", e)
        raise SystemExit(f"configuration error: {e}") from None
    _configure_logging(settings.log_level)
    from backend.app import create_app  # after logging is set up, so the model load is logged
    app = create_app(settings)
    if settings.limits.health_port and settings.limits.worker_nice:  # the /health process (started above) keeps
        from backend.serving.priority import lower_worker_priority   # the normal priority, this worker goes below
        lower_worker_priority(settings.limits.worker_nice)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="SAM 2.1 OpenVINO video tracking ML backend for Label Studio")
    parser.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("PORT", "9090")))
    parser.add_argument("--model-dir", help="overrides MODEL_DIR")
    parser.add_argument("--debug", action="store_true", help="Flask debug mode (never in production)")
    args = parser.parse_args(argv)
    if args.model_dir:
        os.environ["MODEL_DIR"] = args.model_dir
    make_app().run(host=args.host, port=args.port, debug=args.debug, use_reloader=False, threaded=True)


if __name__ == "__main__":
    main()
else:
    app = make_app()
