"""Fixtures of the flags tests: a project, its checkout flag, its guard metrics, an editor logged
in."""

import pytest

from tests import factories


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def guard_metrics(project):
    """The metrics the guard tests name: purchase and signup, each counted within a day."""
    return [
        factories.metric(project, "purchase", event="purchase", window_days=1),
        factories.metric(project, "signup", event="signup", window_days=1),
    ]


@pytest.fixture
def checkout(project):
    return factories.flag(project, "checkout")


@pytest.fixture
def editor(client, project):
    user = factories.member(project, "editor")
    client.force_login(user)
    client.raise_request_exception = False  # a 500 is an answer to assert on, not a crash
    return user


@pytest.fixture
def versions_page(checkout) -> str:
    """The admin's versions page of checkout in production."""
    return f"/admin/flags/changerequest/versions/{factories.config(checkout, 'production').pk}/"
