"""Hostile input on the Admin UI: a 400 page naming the parameter, or an error on the form.

NUL characters and lone surrogates only break PostgreSQL, so this file must also run with
DB_URL set (CI does). Each case is its own test: on PostgreSQL a database error aborts the
test's transaction.
"""

import pytest
from django.urls import reverse

from flags.models import AuditEntry, ChangeRequest, ChangeReview, Flag, Rule, Segment
from tests import factories
from tests.flags.test_admin import (
    add_flag_data,
    errors_of,
    form_data,
    messages_of,
    new_rule,
    segment_data,
)
from tests.hostile import DEEP, NUL_JSON, SURROGATE_JSON

pytestmark = pytest.mark.django_db


def assert_bad_request(response, parameter: str, words: str) -> None:
    assert response.status_code == 400, response.status_code
    page = response.content.decode()
    assert f"<code>{parameter}</code>" in page, page[-800:]
    assert words in page


# --- Changelist filters, searches and paths -----------------------------------------------

LISTS = [
    ("flags_flag_changelist", "q", "a\x00b"),
    ("flags_flag_changelist", "tag", "a\x00b"),
    ("flags_flag_changelist", "state", "a\x00b:on"),
    ("flags_flag_changelist", "project__id__exact", "1\x00"),
    ("flags_auditentry_changelist", "flag_key", "a\x00b"),
    ("flags_auditentry_changelist", "actor", "a\x00b"),
    ("flags_auditentry_changelist", "source", "api\x00"),
    ("flags_auditentry_changelist", "q", "\x00"),
    ("flags_segment_changelist", "q", "\x00"),
    ("flags_membership_changelist", "q", "\x00"),
    ("flags_changerequest_changelist", "status", "open\x00"),
    ("flags_changerequest_changelist", "q", "\x00"),
    ("flags_rollout_stale", "days", "\x00"),
]


@pytest.mark.parametrize("page, parameter, value", LISTS)
def test_nul_in_a_filter_or_search_is_a_400_page_naming_it(client, editor, page, parameter, value):
    response = client.get(reverse(f"admin:{page}"), {parameter: value})
    assert_bad_request(response, parameter, "NUL character")


def test_a_superuser_gets_the_same_400_on_every_list(client, project):
    client.force_login(factories.user(superuser=True))
    for name in ("project", "apikey", "flag", "segment", "membership", "auditentry"):
        response = client.get(reverse(f"admin:flags_{name}_changelist"), {"q": "a\x00"})
        assert_bad_request(response, "q", "NUL character")


def test_nul_in_a_path_is_a_400_page(client, editor, checkout):
    response = client.get("/admin/flags/flag/1%00/change/")
    assert_bad_request(response, "object_id", "NUL character")


def test_a_date_hierarchy_year_out_of_range_goes_back_to_the_list(client, editor, checkout):
    url = reverse("admin:flags_auditentry_changelist")
    response = client.get(url, {"created_at__year": "9" * 40})
    assert response.status_code == 302
    assert response.url == f"{url}?e=1"  # Django's own answer to a filter it cannot use


def test_clean_filters_still_list(client, editor, checkout):
    response = client.get(reverse("admin:flags_flag_changelist"), {"q": "check", "tag": "ui"})
    assert response.status_code == 200


# --- ?days= on the evaluations and stale-flag pages ---------------------------------------


@pytest.mark.parametrize("days", ["abc", "0", "-5", "1e3", "9" * 40, "²"])
def test_bad_days_on_the_evaluations_page_is_a_400(client, editor, checkout, days):
    config = factories.config(checkout, "development")
    url = reverse("admin:flags_rollout_exposures", args=[config.pk])
    assert_bad_request(client.get(url, {"days": days}), "days", "whole number from 1 to 90")


@pytest.mark.parametrize("days", ["abc", "0", "9" * 40, "99999"])
def test_bad_days_on_the_stale_page_is_a_400(client, editor, checkout, days):
    url = reverse("admin:flags_rollout_stale")
    assert_bad_request(client.get(url, {"days": days}), "days", "whole number from 1 to 3650")


def test_good_days_show_the_pages(client, editor, checkout):
    config = factories.config(checkout, "development")
    assert client.get(reverse("admin:flags_rollout_stale"), {"days": "90"}).status_code == 200
    exposures = reverse("admin:flags_rollout_exposures", args=[config.pk])
    assert client.get(exposures, {"days": "30"}).status_code == 200


# --- JSON and text on forms ---------------------------------------------------------------

SEGMENT_FIELDS = [
    ("conditions", DEEP, "nested more than 64 levels deep"),
    (
        "conditions",
        '[{"attribute": "a", "operator": "equals", "values": [' + NUL_JSON + "]}]",
        "[0].values[0]: contains a NUL character",
    ),
    (
        "conditions",
        '[{"attribute": ' + SURROGATE_JSON + ', "operator": "exists"}]',
        "[0].attribute: contains a lone surrogate",
    ),
    ("conditions", '[{"attribute": "a", "operator": "exists", "x": NaN}]', "not valid JSON"),
    ("included", "[" + NUL_JSON + "]", "[0]: contains a NUL character"),
    ("included", "[" + SURROGATE_JSON + "]", "[0]: contains a lone surrogate"),
    ("included", "user-1\nuser\x002", "[1]: contains a NUL character"),
    ("excluded", DEEP, "nested more than 64 levels deep"),
    ("description", "a\x00b", "Null characters are not allowed"),
]


@pytest.mark.parametrize("field, value, message", SEGMENT_FIELDS)
def test_segment_form_shows_the_error_on_the_field(client, editor, project, field, value, message):
    response = client.post(
        reverse("admin:flags_segment_add"), segment_data(project, **{field: value})
    )
    assert response.status_code == 200
    assert message in str(response.context["adminform"].form.errors[field])
    assert not Segment.objects.exists()


RULE_CONDITIONS = [
    (DEEP, "nested more than 64 levels deep"),
    ('[{"attribute": "a", "operator": "equals", "values": [' + NUL_JSON + "]}]", "NUL character"),
    ('[{"attribute": ' + NUL_JSON + ', "operator": "exists"}]', "NUL character"),
    ('[{"attribute": "a", "operator": "equals", "values": [' + SURROGATE_JSON + "]}]", "surrogate"),
    ('[{"attribute": "a", "operator": "in", "values": [' + "[" * 900 + "]" * 900 + "]}]", "nested"),
]


@pytest.mark.parametrize("conditions, message", RULE_CONDITIONS)
def test_a_rule_with_unstorable_conditions_is_a_form_error(
    client, editor, checkout, conditions, message
):
    data = form_data(client.get(reverse("admin:flags_flag_change", args=[checkout.pk])))
    data.update(new_rule("development", int(data["rules-TOTAL_FORMS"]), conditions=conditions))
    response = client.post(reverse("admin:flags_flag_change", args=[checkout.pk]), data)
    assert message in errors_of(response)
    assert not Rule.objects.exists()


VARIANT_VALUES = [
    ("string", NUL_JSON, "NUL character"),
    ("string", SURROGATE_JSON, "lone surrogate"),
    ("json", '{"a": ' + NUL_JSON + "}", "a: contains a NUL character"),
    ("json", DEEP, "nested more than 64 levels deep"),
    ("string", "plain \x00 text", "Null characters are not allowed"),
]


@pytest.mark.parametrize("flag_type, value, message", VARIANT_VALUES)
def test_an_unstorable_variant_value_is_a_form_error(
    client, editor, project, flag_type, value, message
):
    variants = {
        "variants-TOTAL_FORMS": "1",
        "variants-0-key": "a",
        "variants-0-value": value,
        "variants-0-position": "0",
    }
    data = add_flag_data(project, key="banner", type=flag_type, **variants)
    response = client.post(reverse("admin:flags_flag_add"), data)
    assert message in errors_of(response)
    assert not AuditEntry.objects.filter(object_type="flag").exists()


def test_plain_text_variant_values_are_still_strings(client, editor, project):
    variants = {
        "variants-TOTAL_FORMS": "1",
        "variants-0-key": "a",
        "variants-0-value": "[not json",
        "variants-0-position": "0",
    }
    data = add_flag_data(project, key="banner", type="string", **variants)
    assert client.post(reverse("admin:flags_flag_add"), data).status_code == 302
    assert Flag.objects.get(key="banner").variants.get().value == "[not json"


# --- The versions and review pages' own forms ---------------------------------------------


@pytest.fixture
def versions(client, editor, checkout):
    config = factories.config(checkout, "development")
    return reverse("admin:flags_rollout_versions", args=[config.pk])


POSTS = [
    ({"propose": "1", "title": "t", "changes": DEEP, "version": "1"}, "nested more than"),
    ({"propose": "1", "title": "t\x00", "changes": '{"enabled": true}'}, "title: contains a NUL"),
    (
        {"propose": "1", "changes": '{"rules": [{"name": ' + NUL_JSON + ', "serve": {}}]}'},
        "changes.rules[0].name: contains a NUL",
    ),
    ({"propose": "1", "changes": '{"enabled": true}', "version": "x"}, "version: expected"),
    ({"propose": "1", "changes": "[1]"}, "a JSON object"),
    ({"restore": "abc"}, "restore: expected a whole number"),
    ({"restore": "1", "version": "9" * 40}, "version: expected a whole number"),
]


@pytest.mark.parametrize("data, message", POSTS)
def test_the_versions_page_reports_bad_input_and_writes_nothing(client, versions, data, message):
    response = client.post(versions, data, follow=True)
    assert response.status_code == 200
    assert any(message in text for text in messages_of(response)), messages_of(response)
    assert not ChangeRequest.objects.exists()
    assert not AuditEntry.objects.filter(source="admin").exists()


def test_a_review_comment_with_nul_is_refused(client, project, checkout):
    from flags import approvals

    author = factories.member(project, "editor")
    change = approvals.change_request_create(
        config=factories.config(checkout, "production"),
        data={"enabled": True},
        title="Go",
        actor=author,
        source="api",
    )
    client.force_login(factories.member(project, "publisher"))
    url = reverse("admin:flags_rollout_request", args=[change.pk])
    response = client.post(url, {"approve": "1", "comment": "ok\x00"}, follow=True)
    assert any("comment: contains a NUL" in text for text in messages_of(response))
    assert not ChangeReview.objects.exists()
