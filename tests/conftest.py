"""Shared test configuration: hypothesis profiles for numeric tests."""
import os

from hypothesis import HealthCheck, settings

# Numeric tests have no meaningful deadline (first calls pay for imports and BLAS warm-up).
# On CI the examples are derandomised, so a landing never depends on luck.
settings.register_profile(
    "dev",
    deadline=None,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "ci",
    parent=settings.get_profile("dev"),
    derandomize=True,
    print_blob=True,
)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")
