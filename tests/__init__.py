"""
Tests for twisted_bcr.

Importing this package selects the hypothesis profile every test module uses:
no per-example deadline (trial on a loaded 2-core machine is slow, and a
deadline miss says nothing about correctness), no too_slow health check, and
in CI (environment variable C{CI} set) derandomized examples so a run is
reproducible.
"""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "twisted_bcr",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "twisted_bcr-ci",
    parent=settings.get_profile("twisted_bcr"),
    derandomize=True,
    database=None,
)
settings.load_profile("twisted_bcr-ci" if os.environ.get("CI") else "twisted_bcr")
