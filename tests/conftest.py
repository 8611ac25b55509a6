"""Shared test configuration.

Hypothesis profiles: ``dev`` (default, 50 examples) and ``ci`` (derandomised, loaded when the
environment variable ``CI`` is set, so that a CI failure reproduces exactly). ``deadline=None``
everywhere: the first call of a Numba kernel compiles it, and compile time is not test time.
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", max_examples=50, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", max_examples=50, deadline=None, derandomize=True, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture
def rng():
    """A fresh, fixed-seed generator for each test (SPEC section 1: explicit randomness)."""
    return np.random.default_rng(20261125)
