"""The admin's safe-rollout pages: versions and restore, a change request's review, exposures."""

import time
from datetime import timedelta

import pytest

from evaluation import exposures
from flags.models import ChangeRequest, Flag
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(client):
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    factories.configure(flag, "development", enabled=True)
    editor = factories.member(project, "editor", username="ed")
    client.force_login(editor)
    return project, flag, editor


def test_the_flag_page_links_to_versions_and_evaluations(setup, client):
    _, flag, _ = setup
    page = client.get(f"/admin/flags/flag/{flag.pk}/change/")
    config = factories.config(flag, "development")
    assert f"/admin/flags/changerequest/versions/{config.pk}/" in page.content.decode()


def test_versions_page_sends_proposals_to_the_flag_page_and_keeps_json_folded(setup, client):
    _, flag, _ = setup
    config = factories.config(flag, "development")
    page = client.get(f"/admin/flags/changerequest/versions/{config.pk}/").content.decode()
    assert f'make it on <a href="/admin/flags/flag/{flag.pk}/change/">the flag\'s page</a>' in page
    folded = page.split('<details class="flag-propose-json">', 1)[1].split("</details>", 1)[0]
    assert '<textarea name="changes"' in folded and "Propose for review" in folded


def test_versions_page_shows_the_diff_and_restores(setup, client):
    _, flag, _ = setup
    config = factories.config(flag, "development")
    url = f"/admin/flags/changerequest/versions/{config.pk}/"
    page = client.get(url).content.decode()
    assert "enabled: off → on" in page

    response = client.post(url, {"restore": "1", "version": "2"})

    assert response.status_code == 302
    config.refresh_from_db()
    assert config.enabled is False and config.version == 3


def test_restoring_a_version_that_never_was_is_a_404_page(setup, client):
    _, flag, _ = setup
    config = factories.config(flag, "development")
    url = f"/admin/flags/changerequest/versions/{config.pk}/"

    response = client.post(url, {"restore": "99", "version": "2"})

    assert response.status_code == 404
    config.refresh_from_db()
    assert config.version == 2


def test_a_change_request_is_proposed_and_approved_in_the_admin(setup, client):
    project, flag, _ = setup
    project.require_approval = True
    project.save()
    config = factories.config(flag, "production")
    url = f"/admin/flags/changerequest/versions/{config.pk}/"
    client.post(url, {"propose": "1", "title": "Go", "changes": '{"enabled": true}', "version": 1})
    change = ChangeRequest.objects.get()

    client.force_login(factories.member(project, "publisher"))
    page = client.get(f"/admin/flags/changerequest/{change.pk}/review/").content.decode()
    assert "enabled: off → on" in page
    client.post(f"/admin/flags/changerequest/{change.pk}/review/", {"approve": "1"})

    change.refresh_from_db()
    assert change.status == "applied"
    config.refresh_from_db()
    assert config.enabled is True


def test_exposures_and_stale_pages(setup, client):
    project, flag, _ = setup
    config = factories.config(flag, "development")
    exposures.add(config.environment_id, "checkout", "on", "DEFAULT", 12, int(time.time()))
    exposures.drain()
    page = client.get(f"/admin/flags/changerequest/exposures/{config.pk}/").content.decode()
    assert "12" in page and "never" not in page
    unused = factories.flag(project, "unused")
    Flag.objects.filter(pk=unused.pk).update(created_at=unused.created_at - timedelta(days=60))
    factories.flag(project, "brand-new")
    stale = client.get("/admin/flags/changerequest/stale/").content.decode()
    assert "unused" in stale and "never evaluated" in stale
    assert "brand-new" not in stale


def test_admin_templates_are_found_in_the_top_level_templates_folder(settings):
    from django.template.loader import get_template

    for name in ("admin/flags/bad_request.html", "admin/flags/rollouts/versions.html"):
        origin = get_template(name).origin.name
        assert origin == str(settings.BASE_DIR / "templates" / name)
