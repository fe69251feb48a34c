"""Fixtures of the Admin UI's input tests: a project, its checkout flag, an editor logged in."""

import pytest

from tests import factories


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def checkout(project):
    return factories.flag(project, "checkout")


@pytest.fixture
def editor(client, project):
    user = factories.member(project, "editor")
    client.force_login(user)
    client.raise_request_exception = False  # a 500 is an answer to assert on, not a crash
    return user
