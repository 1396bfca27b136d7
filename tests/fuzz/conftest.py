"""Hypothesis profiles for the fuzz suite: `ci` (default: few examples, derandomized so CI is reproducible, no
per-example deadline because the CI machine is shared) and `long` for a local hunt:
HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/fuzz."""
import os

from hypothesis import HealthCheck, settings

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                        HealthCheck.function_scoped_fixture])
settings.register_profile("ci", max_examples=60, derandomize=True, print_blob=True, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
