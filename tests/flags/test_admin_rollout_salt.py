"""The admin shows a rollout's own salt read-only and keeps it through an edit of the weights."""

import json

import pytest

from tests import factories
from tests.flags.test_admin import flag_url, form_data

pytestmark = pytest.mark.django_db

WEIGHTS = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]


def test_the_rollout_salt_is_shown_read_only_and_kept_when_the_weights_change(client):
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    rule = {
        "id": "beta",
        "conditions": [],
        "serve": {"rollout": {"variants": WEIGHTS, "salt": "g1"}},
    }
    factories.configure(
        flag,
        "development",
        defaultServe={"rollout": {"variants": WEIGHTS, "salt": "g2"}},
        rules=[rule],
    )
    client.force_login(factories.user(superuser=True))
    page = client.get(flag_url(flag))
    html = page.content.decode()
    assert "rollout salt" in html.lower()
    assert "g1" in html and "g2" in html
    data = form_data(page)
    assert not [name for name in data if name.endswith("-salt")]  # read-only: no input

    wider = json.dumps([{"variant": "on", "weight": 80}, {"variant": "off", "weight": 20}])
    for name, value in list(data.items()):
        if name.endswith("-rollout") and value not in ("", "[]"):
            data[name] = wider
    response = client.post(flag_url(flag), data)
    assert response.status_code == 302, response.content[:500]

    config = factories.config(flag, "development")
    assert (config.rollout[0]["weight"], config.salt) == (80, "g2")
    saved_rule = flag.rules.get(environment=config.environment)
    assert (saved_rule.rollout[0]["weight"], saved_rule.salt) == (80, "g1")
