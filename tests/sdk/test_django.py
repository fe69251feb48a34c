"""flagclient.django: the client from settings, flag_enabled, the decorator, the tag, overrides."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import AnonymousUser, User
from django.http import Http404, HttpResponse
from django.template import Context, Template
from django.test import RequestFactory
from flagclient.django import flag_enabled, flag_required, get_client, request_context
from flagclient.django.testing import override_flag

from tests.sdk.documents import document

TEMPLATE = "{% load flagclient %}{% flag 'new-checkout' %}new{% else %}old{% endflag %}"


def staff_only_document() -> dict:
    flags = document()
    flags["flags"]["new-checkout"]["rules"] = [
        {
            "id": "staff",
            "conditions": [{"attribute": "staff", "operator": "equals", "values": [True]}],
            "serve": {"variant": "on"},
        }
    ]
    flags["flags"]["new-checkout"]["targets"] = [{"variant": "on", "values": ["7"]}]
    return flags


def beta_context(request) -> dict:
    return {"staff": request.headers.get("X-Beta") == "yes"}


@pytest.fixture(autouse=True)
def flagclient_settings(settings, tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(staff_only_document()))
    settings.INSTALLED_APPS = [*settings.INSTALLED_APPS, "flagclient.django"]
    settings.FLAGCLIENT = {"OFFLINE": True, "BOOTSTRAP_PATH": str(path)}
    yield settings
    settings.FLAGCLIENT = None  # closes the client


def request_for(user=None, headers=None):
    request = RequestFactory().get("/", headers=headers)
    request.user = user or AnonymousUser()
    return request


def test_the_client_is_built_once_from_settings():
    assert get_client() is get_client()
    assert get_client().version == 7


def test_flag_enabled_builds_the_context_from_the_user():
    assert flag_enabled(request_for(User(pk=7, username="ann")), "new-checkout")
    assert flag_enabled(request_for(User(pk=8, username="bob", is_staff=True)), "new-checkout")
    assert not flag_enabled(request_for(User(pk=9, username="eve")), "new-checkout")
    assert not flag_enabled(request_for(), "new-checkout")
    context = request_context(request_for(User(pk=7, username="ann", email="a@example.com")))
    assert context["targetingKey"] == "7" and context["email"] == "a@example.com"


def test_a_setting_names_the_function_that_builds_the_context(settings):
    settings.FLAGCLIENT = {**settings.FLAGCLIENT, "CONTEXT": f"{__name__}.beta_context"}
    assert flag_enabled(request_for(headers={"X-Beta": "yes"}), "new-checkout")
    assert not flag_enabled(request_for(User(pk=7)), "new-checkout")  # no targeting key now


def test_missing_settings_are_reported(settings):
    from django.core.exceptions import ImproperlyConfigured

    settings.FLAGCLIENT = {"URL": "https://flags.example.com"}
    with pytest.raises(ImproperlyConfigured, match="SERVER_KEY"):
        get_client()


@pytest.mark.parametrize(
    ("key", "value", "argument"),
    [
        ("POLL_INTERVAL", -1, "poll_interval"),
        ("TIMEOUT", "5", "timeout"),
        ("RECONNECT_DELAY", (30, 1), "reconnect_delay"),
        ("MAX_DOCUMENT_BYTES", 0, "max_document_bytes"),
    ],
)
def test_bad_options_are_reported_naming_the_option(settings, key, value, argument):
    from django.core.exceptions import ImproperlyConfigured

    settings.FLAGCLIENT = {"OFFLINE": True, key: value}
    with pytest.raises(ImproperlyConfigured, match=argument):
        get_client()


def test_the_view_decorator_answers_404_or_redirects_when_the_flag_is_off():
    @flag_required("new-checkout")
    def checkout(request):
        return HttpResponse("new checkout")

    @flag_required("new-checkout", redirect_to="/old-checkout")
    def checkout_or_old(request):
        return HttpResponse("new checkout")

    assert checkout(request_for(User(pk=7))).content == b"new checkout"
    with pytest.raises(Http404):
        checkout(request_for(User(pk=9)))
    response = checkout_or_old(request_for(User(pk=9)))
    assert (response.status_code, response["Location"]) == (302, "/old-checkout")


def test_the_template_tag_renders_the_branch_for_the_users_flag():
    template = Template(TEMPLATE)
    assert template.render(Context({"request": request_for(User(pk=7))})) == "new"
    assert template.render(Context({"request": request_for(User(pk=9))})) == "old"
    assert template.render(Context({})) == "old"  # no request, no flag


def test_the_value_tag_gives_any_flags_value():
    template = Template(
        "{% load flagclient %}{% flag_value_of 'banner-text' 'Hi' as text %}{{ text }}"
        "|{% flag_value_of 'no-such-flag' 'Hi' as other %}{{ other }}"
    )
    assert template.render(Context({"request": request_for()})) == "Hello|Hi"


def test_override_flag_in_a_block():
    request = request_for(User(pk=9))
    with override_flag("new-checkout", True):
        assert flag_enabled(request, "new-checkout")
        assert Template(TEMPLATE).render(Context({"request": request})) == "new"
    assert not flag_enabled(request, "new-checkout")


@override_flag("new-checkout", False)
def test_override_flag_on_a_test():
    assert not flag_enabled(request_for(User(pk=7)), "new-checkout")
