"""One writer for a flag's targeting: the same change, whatever the door, is the same write.

The admin's flag page, the API and the command line change a configuration through
`services.flag_config_update`; rules keep their identity (`id`) through every door; a
rollout is stored in one format, the flag document's list.
"""

import importlib

import pytest
from django.apps import apps

from flags.models import Rule
from tests import factories

pytestmark = pytest.mark.django_db


def test_rollouts_stored_by_the_old_admin_become_the_documents_list():
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    config = factories.config(flag, "staging")
    development = factories.environment(project, "development")
    rule = Rule.objects.create(flag=flag, environment=development, serve_variant="on")
    type(config).objects.filter(pk=config.pk).update(
        serve_variant="", rollout={"off": 75, "on": 25}
    )
    Rule.objects.filter(pk=rule.pk).update(rollout={})
    migration = importlib.import_module("flags.migrations.0004_rollout_as_list")
    migration.forwards(apps, None)
    config.refresh_from_db()
    rule.refresh_from_db()
    # In the flag's variant order (on, off): the order the document gave them before.
    assert config.rollout == [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
    assert rule.rollout == []
