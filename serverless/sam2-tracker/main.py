"""nuclio entry point of the SAM 2.1 tracker function; the code is backend/cvat/nuclio_handler.py (staged by deploy.sh)."""
from backend.cvat.nuclio_handler import handler, init_context

__all__ = ["handler", "init_context"]
