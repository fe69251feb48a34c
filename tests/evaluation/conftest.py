"""Every test that takes `client` runs through Django and through the fast path."""

from tests.evaluation.doors import client  # noqa: F401 - fixture
