"""Test-wide setup: isolate each run's cache keys and each test's compiled snapshots."""

import os
import uuid

import pytest

# Every run gets its own cache key prefix, so runs sharing one Redis never see each other's
# keys, and what a run leaves is removed at its end.
os.environ.setdefault("CACHE_PREFIX", f"flags-test-{uuid.uuid4().hex[:8]}")


def _clear_cache() -> None:
    from django.core.cache import cache, caches

    caches["limits"].clear()  # the per-process counts kept while Redis is away
    if hasattr(cache, "delete_pattern"):
        cache.delete_pattern("*")  # scoped to this run's KEY_PREFIX
    else:
        cache.clear()


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing():
    """Real hashing is slow by design; the tests are not about its strength."""
    from django.conf import settings

    if settings.configured:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield


@pytest.fixture(autouse=True)
def _fresh_caches():
    """Database rows roll back after each test, so cached versions must go with them."""
    from django.conf import settings

    if not settings.configured:  # the engine's own tests run without Django
        yield
        return
    from evaluation import cache as snapshots

    _clear_cache()
    snapshots.clear_local()
    yield
    _clear_cache()
    snapshots.clear_local()
