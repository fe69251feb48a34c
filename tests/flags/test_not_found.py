"""A thing asked for by key that is not there: each door says so in its own form."""

import pytest

from flags import selectors
from flags.errors import NotFound
from tests import factories
from tests.flags.command_line import fails
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop")


def test_selectors_raise_not_found_naming_what_is_missing(project):
    with pytest.raises(NotFound) as missing:
        selectors.environment_for(project, "qa")
    assert missing.value.subject == "environment 'qa' in project 'shop'"
    assert missing.value.known == ("development", "staging", "production")


def test_the_api_answers_404_json(project):
    admin = factories.user(superuser=True)
    response = client_for(admin).get("/api/v1/projects/shop/flags/nope")
    assert response.status_code == 404
    assert response.json()["detail"] == "no flag 'nope' in project 'shop'"


def test_the_command_line_prints_one_line_and_exits_2(project):
    assert fails("show", "shop/nope", "staging") == "unknown flag 'nope' in project 'shop'"
    assert fails("keys", "create", "shop", "qa", "--name", "x") == (
        "unknown environment 'qa' in project 'shop' (one of: development, staging, production)"
    )
