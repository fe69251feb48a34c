"""The shared cache's key scheme: the texts workers of two releases share during a deploy."""

import pytest
from django.core.cache import cache

from evaluation import cache as snapshots
from evaluation import keys
from tests import factories


def test_key_texts_stay_what_running_workers_read_and_write(settings):
    settings.CACHE_PREFIX = "flags"
    assert keys.version(7) == "env:7:version"
    assert keys.document(7, 42) == "env:7:doc:42"
    assert keys.credential("ab12") == "credential:ab12"
    assert keys.credential_used("ab12") == "apikey:ab12:used"
    assert keys.exposures(7, 493000) == "exposures:7:493000"
    assert keys.EXPOSURES_PENDING == "exposures:pending"
    assert keys.changes_channel() == "flags:changes"


@pytest.mark.django_db
def test_a_snapshot_leaves_its_version_and_document_under_the_scheme_keys():
    project = factories.project("keyed")
    factories.flag(project, "new-checkout")
    environment = factories.environment(project, "development")
    snapshots.clear_local()
    cache.delete(keys.version(environment.pk))
    served = snapshots.snapshot(environment.pk)
    assert served is not None
    assert cache.get(keys.version(environment.pk)) == served.version
    document = cache.get(keys.document(environment.pk, served.version))
    assert document["version"] == served.version
    assert "new-checkout" in document["flags"]
