"""Saving the flag page when it changes a protected environment: the review step (what
changes there, a comment), then the reviewed save, a change request, or a clean refusal."""

import html
import re

import pytest
from django.core import signing

from flags.admin.flag_review import TOKEN_FIELD, TOKEN_SALT
from flags.models import AuditEntry, ChangeRequest, FlagConfig
from tests import factories
from tests.flags.test_admin import post_flag_page
from tests.review_steps import confirm_review, is_review

pytestmark = pytest.mark.django_db

PRODUCTION_ON = {"configs-2-enabled": "on"}
DEVELOPMENT_ON = {"configs-0-enabled": "on"}


@pytest.fixture
def project():
    return factories.project("shop", name="Shop")


@pytest.fixture
def checkout(project):
    return factories.flag(project, "new-checkout")


def login(client, project, role="publisher"):
    user = factories.member(project, role)
    client.force_login(user)
    return user


def text_of(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


def config_audits() -> int:
    return AuditEntry.objects.filter(object_type="flag_config").count()


def test_saving_production_shows_the_review_and_writes_nothing(client, project, checkout):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    assert review.status_code == 200 and is_review(review)
    page = text_of(review)
    assert "Production (protected)" in page and "enabled: off → on" in page
    assert "Comment on Production" in page and 'value="Save"' in page
    assert factories.config(checkout, "production").enabled is False
    assert config_audits() == 0


def test_the_reviewed_save_writes_the_change_with_its_comment(client, project, checkout):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON, **DEVELOPMENT_ON)
    assert [r.config.environment.key for r in review.context["reviews"]] == ["production"]
    response = confirm_review(client, review, "Launch day")
    assert response.status_code == 302, text_of(response)[:2000]
    assert factories.config(checkout, "production").enabled is True
    assert factories.config(checkout, "development").enabled is True
    entry = AuditEntry.objects.get(action="enable", environment__key="production")
    assert (entry.comment, entry.source) == ("Launch day", "admin")
    assert AuditEntry.objects.get(action="enable", environment__key="development").comment == ""


def test_a_change_only_to_unprotected_environments_saves_at_once(client, project, checkout):
    login(client, project)
    response = post_flag_page(client, checkout, **DEVELOPMENT_ON)
    assert response.status_code == 302
    assert factories.config(checkout, "development").enabled is True


def test_a_review_of_a_flag_changed_since_is_a_409_and_writes_nothing(client, project, checkout):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    factories.configure(checkout, "staging", enabled=True)  # someone else, meanwhile
    audits = config_audits()
    response = confirm_review(client, review, "Launch day")
    assert response.status_code == 409
    assert "changed by someone else" in text_of(response)
    assert factories.config(checkout, "production").enabled is False
    assert config_audits() == audits


def test_a_review_of_a_different_change_is_refused(client, project, checkout):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    response = confirm_review(client, review, "x", **{"configs-2-off_variant": "on"})
    assert response.status_code == 400
    assert "not the one reviewed" in text_of(response)
    assert factories.config(checkout, "production").enabled is False


def test_where_approval_is_required_the_review_opens_a_change_request(client, project, checkout):
    project.require_approval = True
    project.save()
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    page = text_of(review)
    assert "requires approval" in page and "opens a change request" in page
    assert "POST /api" not in page
    response = confirm_review(client, review, "Marketing is ready")
    assert response.status_code == 302, text_of(response)[:2000]
    change = ChangeRequest.objects.get()
    assert (change.data, change.status) == ({"enabled": True}, "open"), "what changed, no more"
    assert change.title == "Change new-checkout in Production"
    assert factories.config(checkout, "production").enabled is False
    entry = AuditEntry.objects.exclude(comment="").get()  # the proposal's
    assert entry.comment == "Marketing is ready" and entry.object_type != "flag_config"
    messages = text_of(client.get(response["Location"]))
    assert "Change request #" in messages
    assert "was changed successfully" not in messages, "nothing was changed yet"


def test_a_change_saved_beside_a_change_request_is_still_said_saved(client, project, checkout):
    project.require_approval = True
    project.save()
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON, **DEVELOPMENT_ON)
    response = confirm_review(client, review, "Marketing is ready")
    assert response.status_code == 302, text_of(response)[:2000]
    messages = text_of(client.get(response["Location"]))
    assert "Change request #" in messages and "was changed successfully" in messages
    assert factories.config(checkout, "development").enabled is True


def test_an_editor_asks_for_production_where_approval_is_required(client, project, checkout):
    project.require_approval = True
    project.save()
    login(client, project, "editor")
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    assert is_review(review) and "opens a change request" in text_of(review)
    response = confirm_review(client, review, "please")
    assert response.status_code == 302
    assert ChangeRequest.objects.get().data["enabled"] is True
    assert factories.config(checkout, "production").enabled is False


def test_an_editor_still_cannot_change_production_without_approval(client, project, checkout):
    login(client, project, "editor")
    response = post_flag_page(client, checkout, **PRODUCTION_ON)
    assert not is_review(response)  # the row is locked: the posted switch is ignored
    assert factories.config(checkout, "production").enabled is False
    assert config_audits() == 0


@pytest.mark.parametrize("comment", ["a\x00b", "x" * 1001])
def test_a_bad_comment_is_named_and_nothing_is_written(client, project, checkout, comment):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    response = confirm_review(client, review, comment)
    assert response.status_code == 400 and is_review(response)
    assert "Production: comment:" in text_of(response)
    assert factories.config(checkout, "production").enabled is False
    assert config_audits() == 0


@pytest.mark.parametrize(
    "token",
    [
        "forged",
        "a\x00b",
        "x" * 5000,
        "é" * 10,
        signing.dumps({"flag": 1, "user": 1, "page": "", "changes": ""}, salt="other"),
        signing.dumps(["not", "a", "dict"], salt=TOKEN_SALT),
    ],
)
def test_a_forged_token_is_a_400_page(client, project, checkout, token):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    response = confirm_review(client, review, "x", **{TOKEN_FIELD: token})
    assert response.status_code == 400
    assert "nothing was saved" in text_of(response)
    assert factories.config(checkout, "production").enabled is False
    assert config_audits() == 0


def test_someone_elses_review_token_is_refused(client, project, checkout):
    login(client, project)
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    login(client, project)  # another publisher posts the first one's review
    response = confirm_review(client, review, "x")
    assert response.status_code == 400 and "someone else's" in text_of(response)
    assert factories.config(checkout, "production").enabled is False


def test_a_review_token_for_another_flag_is_refused(client, project, checkout):
    other = factories.flag(project, "other")
    login(client, project)
    review = post_flag_page(client, other, **PRODUCTION_ON)
    token = review.context["token"]
    review = post_flag_page(client, checkout, **PRODUCTION_ON)
    response = confirm_review(client, review, "x", **{TOKEN_FIELD: token})
    assert response.status_code == 400 and "another flag" in text_of(response)
    assert not FlagConfig.objects.filter(enabled=True, environment__key="production").exists()


def test_a_variant_change_that_production_serves_opens_a_change_request(client, project):
    project.require_approval = True
    project.save()
    flag = factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "a", "value": "blue"}, {"key": "b", "value": "red"}],
    )
    factories.configure(flag, "production", enabled=True, defaultServe={"variant": "a"})
    login(client, project)
    response = post_flag_page(client, flag, **{"variants-0-value": "green", "name": "Banner"})
    assert response.status_code == 302
    change = ChangeRequest.objects.get()
    assert (change.kind, change.status) == ("flag", "open")
    flag.refresh_from_db()
    assert flag.name == "Banner"  # the name serves nothing: saved
    assert flag.variants.get(key="a").value == "blue"  # the value waits for the review
