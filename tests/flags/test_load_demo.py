"""`manage.py load_demo`, which `make run` calls on every start."""

import io
import re

import pytest
from django.core.management import call_command

from evaluation import cache
from flags.models import Environment, Flag

pytestmark = pytest.mark.django_db


def load(settings, tmp_path) -> str:
    settings.BASE_DIR = tmp_path
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def test_demo_is_loaded_once_and_prints_the_same_admin_password(settings, tmp_path):
    first = load(settings, tmp_path)
    second = load(settings, tmp_path)
    password = re.search(r"password '([^']+)'", first).group(1)
    assert f"password '{password}'" in second
    assert "already loaded" in second
    assert Flag.objects.filter(project__key="demo").count() == 4


def test_demo_flags_evaluate_as_the_readme_says(settings, tmp_path):
    load(settings, tmp_path)
    development = Environment.objects.get(project__key="demo", key="development")
    result = cache.snapshot(development.pk).evaluate(
        "new-checkout", {"targetingKey": "user-7", "country": "US", "plan": "pro"}
    )
    assert (result.value, result.variant, result.reason) == (True, "on", "TARGETING_MATCH")


def test_demo_refuses_production(settings, tmp_path):
    settings.PRODUCTION_LIKE = True
    settings.NODE_ENV = "production"
    with pytest.raises(Exception, match="refusing"):
        load(settings, tmp_path)
