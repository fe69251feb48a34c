"""The Admin UI through Django's test client, as people of each project role use it."""

import hashlib
import html
import json
import re

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.messages import get_messages
from django.urls import reverse

from flags.models import (
    ApiKey,
    AuditEntry,
    ChangeRequest,
    Environment,
    Flag,
    FlagConfig,
    Membership,
    Prerequisite,
    Project,
    Rule,
    Segment,
    Target,
)
from tests import factories
from tests.review_steps import confirm_review, is_review

pytestmark = pytest.mark.django_db

ENVIRONMENT_ROWS = {"development": 0, "staging": 1, "production": 2}
STAFF_RULE = {"name": "staff", "conditions": [], "serve": {"variant": "on"}}


# --- Helpers -----------------------------------------------------------------------------


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def checkout(project):
    return factories.flag(project, "new-checkout", tags=["checkout"])


def as_role(client, project, role):
    user = factories.member(project, role)
    client.force_login(user)
    return user


def flag_url(flag):
    return reverse("admin:flags_flag_change", args=[flag.pk])


def toggle_url(flag, environment_key):
    environment = factories.environment(flag.project, environment_key)
    return reverse("admin:flags_flag_toggle", args=[flag.pk, environment.pk])


def _field_value(bound):
    value = bound.value()
    if isinstance(value, bool):
        return "on" if value else None
    return "" if value is None else str(value)


def form_data(response) -> dict:
    """What a browser would post back from an admin change page, unchanged."""
    data = {}
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        forms += [formset.management_form, *formset.forms]
    for form in forms:
        for bound in form:
            if bound.field.disabled:
                continue  # browsers do not send disabled fields
            value = _field_value(bound)
            if value is not None:
                data[bound.html_name] = value
    return data


def post_flag_page(client, flag, **changes):
    data = form_data(client.get(flag_url(flag)))
    data.update(changes)
    return client.post(flag_url(flag), {k: v for k, v in data.items() if v is not None})


def new_rule(environment_key, total, **fields) -> dict:
    """Fields of a new rule row; `total` is the rules formset's current row count."""
    environment = Environment.objects.get(project__key="shop", key=environment_key)
    row = {
        "environment": str(environment.pk),
        "position": "0",
        "name": "",
        "conditions": "[]",
        "serve_variant": "on",
        "rollout": "[]",
        "bucket_by": "targetingKey",
        **fields,
    }
    data = {f"rules-{total}-{name}": value for name, value in row.items()}
    data["rules-TOTAL_FORMS"] = str(total + 1)
    return data


def messages_of(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def errors_of(response) -> str:
    """Every error the re-rendered page shows, form and inline rows alike."""
    assert response.status_code == 200, response.status_code
    parts = [str(response.context["adminform"].form.errors)]
    for inline in response.context["inline_admin_formsets"]:
        parts += [str(inline.formset.non_form_errors()), str(inline.formset.errors)]
    return html.unescape(" ".join(parts))


def state_cell(response, flag, environment_key) -> str:
    html = response.content.decode()
    row = re.search(rf"<tr>.*?>{re.escape(flag.key)}</a>.*?</tr>", html, re.S)
    assert row, f"{flag.key} is not listed"
    cell = re.search(rf'<td class="field-state_{environment_key}">(.*?)</td>', row.group(0), re.S)
    assert cell, f"no {environment_key} column"
    return cell.group(1)


# --- The list ----------------------------------------------------------------------------


def test_list_shows_each_environments_state(client, project, checkout):
    factories.configure(checkout, "staging", enabled=True)
    as_role(client, project, "editor")
    response = client.get(reverse("admin:flags_flag_changelist"))
    assert response.status_code == 200
    html = response.content.decode()
    for name in ("Development", "Staging", "Production"):
        assert f">{name}</" in html
    assert ">Off<" in state_cell(response, checkout, "development")
    assert ">On<" in state_cell(response, checkout, "staging")
    assert "flag-state-locked" in state_cell(response, checkout, "production")
    assert "formaction" in state_cell(response, checkout, "development")
    assert 'href="/static/flags/admin.css"' in html


def test_list_searches_and_filters(client, project, checkout):
    other = factories.flag(project, "dark-mode", tags=["ui"])
    factories.configure(other, "development", enabled=True)
    factories.flag(project, "old-banner")
    Flag.objects.filter(key="old-banner").update(archived=True)
    as_role(client, project, "viewer")
    url = reverse("admin:flags_flag_changelist")

    def listed(**query):
        response = client.get(url, query)
        assert response.status_code == 200
        return {flag.key for flag in response.context["cl"].result_list}

    assert listed(q="checkout") == {"new-checkout"}  # by tag, key or name
    assert listed(q="dark") == {"dark-mode"}
    assert listed(tag="ui") == {"dark-mode"}
    assert listed(state="development:on") == {"dark-mode"}
    assert listed(state="development:off") == {"new-checkout", "old-banner"}
    assert listed(archived__exact="1") == {"old-banner"}
    assert listed(project__id__exact=str(project.pk)) == {"dark-mode", "new-checkout", "old-banner"}


def test_members_see_only_their_projects(client, project, checkout):
    elsewhere = factories.project("elsewhere")
    hidden = factories.flag(elsewhere, "secret-flag")
    as_role(client, project, "viewer")
    response = client.get(reverse("admin:flags_flag_changelist"))
    keys = {flag.key for flag in response.context["cl"].result_list}
    assert keys == {"new-checkout"}
    assert client.get(flag_url(hidden)).status_code == 302  # "does not exist", back to the list
    assert client.post(toggle_url(hidden, "development"), {"enabled": "on"}).status_code == 404


def test_staff_without_membership_sees_no_flag_pages(client, checkout):
    client.force_login(factories.user())
    index = client.get(reverse("admin:index"))
    assert index.status_code == 200
    assert "/admin/flags/flag/" not in index.content.decode()
    assert client.get(reverse("admin:flags_flag_changelist")).status_code == 403


def test_membership_alone_opens_the_admin(client, project, checkout):
    as_role(client, project, "viewer")
    index = client.get(reverse("admin:index")).content.decode()
    assert "/admin/flags/flag/" in index
    assert "/admin/flags/auditentry/" in index
    assert "/admin/flags/apikey/" not in index  # keys are for project admins


def test_every_page_renders_for_a_superuser(client, project, checkout):
    from flags import services

    environment = factories.environment(project, "production")
    services.api_key_create(environment=environment, kind="client", name="app", **factories.SYSTEM)
    services.segment_create(project=project, key="beta", data={}, **factories.SYSTEM)
    factories.member(project, "viewer")
    client.force_login(factories.user(superuser=True))
    for model in (Flag, Segment, Project, Membership, ApiKey, AuditEntry):
        name = model._meta.model_name
        assert client.get(reverse(f"admin:flags_{name}_changelist")).status_code == 200, name
        obj = model.objects.first()
        change = client.get(reverse(f"admin:flags_{name}_change", args=[obj.pk]))
        assert change.status_code == 200, name
        history = client.get(reverse(f"admin:flags_{name}_history", args=[obj.pk]))
        assert history.status_code == 200, name
        if model is not AuditEntry:
            assert client.get(reverse(f"admin:flags_{name}_add")).status_code == 200, name


# --- Toggling ----------------------------------------------------------------------------


def test_toggle_switches_the_flag_audits_and_bumps_the_version(client, project, checkout):
    user = as_role(client, project, "editor")
    development = factories.environment(project, "development")
    version = development.version
    back = reverse("admin:flags_flag_changelist") + "?q=checkout"
    response = client.post(f"{toggle_url(checkout, 'development')}?next={back}", {"enabled": "on"})
    assert response.status_code == 302
    assert response.url == back
    assert factories.config(checkout, "development").enabled is True
    development.refresh_from_db()
    assert development.version > version
    entry = AuditEntry.objects.get(action="enable")
    assert (entry.actor, entry.source, entry.flag_key) == (user, "admin", "new-checkout")
    assert entry.environment == development
    assert LogEntry.objects.filter(object_id=str(checkout.pk), action_flag=CHANGE).exists()
    listed = client.get(back)
    assert ">On<" in state_cell(listed, checkout, "development")
    assert "new-checkout is on in Development." in messages_of(listed)


def test_toggle_needs_a_post_with_a_csrf_token(project, checkout):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(factories.member(project, "admin"))
    assert client.get(toggle_url(checkout, "development")).status_code == 405
    assert client.post(toggle_url(checkout, "development"), {"enabled": "on"}).status_code == 403
    assert factories.config(checkout, "development").enabled is False


def test_toggle_ignores_an_offsite_next(client, project, checkout):
    as_role(client, project, "editor")
    url = f"{toggle_url(checkout, 'development')}?next=https://evil.example/"
    response = client.post(url, {"enabled": "on"})
    assert response.url == reverse("admin:flags_flag_changelist")


def test_editor_cannot_toggle_a_protected_environment(client, project, checkout):
    as_role(client, project, "editor")
    response = client.post(toggle_url(checkout, "production"), {"enabled": "on"}, follow=True)
    assert factories.config(checkout, "production").enabled is False
    assert not AuditEntry.objects.filter(action="enable").exists()
    (message,) = messages_of(response)
    assert "new-checkout was not changed" in message
    assert "needs the publisher role" in message


@pytest.mark.parametrize("role", ["publisher", "admin"])
def test_publishers_and_admins_toggle_protected_environments(client, project, checkout, role):
    as_role(client, project, role)
    client.post(toggle_url(checkout, "production"), {"enabled": "on"})
    assert factories.config(checkout, "production").enabled is True


def test_viewer_cannot_toggle(client, project, checkout):
    as_role(client, project, "viewer")
    response = client.get(reverse("admin:flags_flag_changelist"))
    assert "<button" not in state_cell(response, checkout, "development")
    client.post(toggle_url(checkout, "development"), {"enabled": "on"})
    assert factories.config(checkout, "development").enabled is False


def test_actions_switch_many_flags_in_one_environment(client, project, checkout):
    other = factories.flag(project, "dark-mode")
    as_role(client, project, "editor")
    url = reverse("admin:flags_flag_changelist")
    selected = [str(checkout.pk), str(other.pk)]
    response = client.post(
        url, {"action": "turn_on_staging", "_selected_action": selected}, follow=True
    )
    assert "2 flag(s) on in Staging." in messages_of(response)
    assert FlagConfig.objects.filter(environment__key="staging", enabled=True).count() == 2
    refused = client.post(
        url, {"action": "turn_on_production", "_selected_action": selected}, follow=True
    )
    assert all("needs the publisher role" in m for m in messages_of(refused))
    assert not FlagConfig.objects.filter(environment__key="production", enabled=True).exists()


def test_archive_action_goes_through_the_service(client, project, checkout):
    # Archiving changes what protected production serves: the publisher role (docs/admin.md).
    as_role(client, project, "publisher")
    client.post(
        reverse("admin:flags_flag_changelist"),
        {"action": "archive_flags", "_selected_action": [str(checkout.pk)]},
    )
    checkout.refresh_from_db()
    assert checkout.archived is True
    assert AuditEntry.objects.filter(action="archive", flag_key="new-checkout").exists()


# --- The flag page -----------------------------------------------------------------------


def test_flag_page_switches_an_environment_on(client, project, checkout):
    as_role(client, project, "editor")
    staging = factories.environment(project, "staging")
    version = staging.version
    response = post_flag_page(client, checkout, **{"configs-1-enabled": "on"})
    assert response.status_code == 302, errors_of(response)
    assert factories.config(checkout, "staging").enabled is True
    assert factories.config(checkout, "staging").version == 2
    staging.refresh_from_db()
    assert staging.version > version
    entry = AuditEntry.objects.get(object_type="flag_config", source="admin")
    assert entry.environment == staging
    assert (entry.before["enabled"], entry.after["enabled"]) == (False, True)
    assert LogEntry.objects.filter(object_id=str(checkout.pk), action_flag=CHANGE).exists()


def test_flag_page_adds_a_rule_with_a_rollout(client, project, checkout):
    as_role(client, project, "editor")
    conditions = [{"attribute": "country", "operator": "in", "values": ["US"]}]
    changes = new_rule(
        "development",
        0,
        name="US first",
        conditions=json.dumps(conditions),
        serve_variant="",
        rollout='[{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]',
    )
    response = post_flag_page(client, checkout, **changes)
    assert response.status_code == 302, errors_of(response)
    rule = Rule.objects.get(flag=checkout)
    assert (rule.environment.key, rule.conditions, rule.rollout) == (
        "development",
        conditions,
        [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
    )
    entry = AuditEntry.objects.get(object_type="flag_config", source="admin")
    assert entry.after["rules"][0]["name"] == "US first"


def test_flag_page_changes_the_flags_own_fields_through_the_service(client, project, checkout):
    as_role(client, project, "editor")
    response = post_flag_page(client, checkout, name="New checkout flow", tag_names="checkout, web")
    assert response.status_code == 302, errors_of(response)
    checkout.refresh_from_db()
    assert checkout.name == "New checkout flow"
    assert sorted(checkout.tags.values_list("name", flat=True)) == ["checkout", "web"]
    entry = AuditEntry.objects.get(object_type="flag", action="update")
    assert entry.after["tags"] == ["checkout", "web"]
    # The environments' own entries are for what changed in them, not the flag's name.
    assert not AuditEntry.objects.filter(object_type="flag_config", source="admin").exists()


INVALID_RULES = {
    "a bad regular expression": (
        {"conditions": '[{"attribute": "email", "operator": "matches", "values": ["("]}]'},
        "condition 1: values",
    ),
    "weights that are all 0": (
        {
            "serve_variant": "",
            "rollout": '[{"variant": "on", "weight": 0}, {"variant": "off", "weight": 0}]',
        },
        "at least one weight must be above 0",
    ),
    "an unknown variant": ({"serve_variant": "maybe"}, "unknown variant 'maybe'"),
    "an unknown operator": (
        {"conditions": '[{"attribute": "a", "operator": "resembles", "values": ["x"]}]'},
        "resembles",
    ),
    "a segment that does not exist": (
        {"conditions": '[{"operator": "in_segment", "values": ["nobody"]}]'},
        "nobody",
    ),
    "conditions that are not JSON": ({"conditions": "[{"}, "not valid JSON: Expecting property"),
}


@pytest.mark.parametrize("fields, message", INVALID_RULES.values(), ids=INVALID_RULES)
def test_an_invalid_rule_shows_the_error_and_saves_nothing(
    client, project, checkout, fields, message
):
    as_role(client, project, "editor")
    development = factories.environment(project, "development")
    audit_count = AuditEntry.objects.count()
    changes = {**new_rule("development", 0, **fields), "configs-0-enabled": "on"}
    response = post_flag_page(client, checkout, **changes)
    assert message in errors_of(response)
    assert not Rule.objects.filter(flag=checkout).exists()
    assert factories.config(checkout, "development").enabled is False  # nor anything else
    assert AuditEntry.objects.count() == audit_count
    assert Environment.objects.get(pk=development.pk).version == development.version


def test_an_invalid_rollout_in_an_environment_configuration_is_refused(client, project, checkout):
    as_role(client, project, "editor")
    response = post_flag_page(
        client,
        checkout,
        **{
            "configs-0-serve_variant": "",
            "configs-0-rollout": '[{"variant": "on", "weight": -1}]',
        },
    )
    assert "must be an integer >= 0" in errors_of(response)
    assert factories.config(checkout, "development").rollout == []


def test_an_unknown_target_variant_is_refused(client, project, checkout):
    as_role(client, project, "editor")
    development = factories.environment(project, "development")
    response = post_flag_page(
        client,
        checkout,
        **{
            "targets-TOTAL_FORMS": "1",
            "targets-0-environment": str(development.pk),
            "targets-0-variant": "maybe",
            "targets-0-values": "user-1\nuser-2",
        },
    )
    assert "unknown variant" in errors_of(response)
    assert not Target.objects.exists()


def test_targets_are_typed_one_key_per_line(client, project, checkout):
    as_role(client, project, "editor")
    development = factories.environment(project, "development")
    response = post_flag_page(
        client,
        checkout,
        **{
            "targets-TOTAL_FORMS": "1",
            "targets-0-environment": str(development.pk),
            "targets-0-variant": "on",
            "targets-0-values": "user-1\nuser-2, user-3\n",
        },
    )
    assert response.status_code == 302, errors_of(response)
    assert Target.objects.get().values == ["user-1", "user-2", "user-3"]


def post_prerequisite(client, flag, required, environment_key: str):
    """Save the flag page with a new prerequisite on `required` (serving on)."""
    environment = factories.environment(flag.project, environment_key)
    return post_flag_page(
        client,
        flag,
        **{
            "prerequisites-TOTAL_FORMS": "1",
            "prerequisites-0-environment": str(environment.pk),
            "prerequisites-0-required_flag": str(required.pk),
            "prerequisites-0-variants": "on",
        },
    )


def test_flag_page_adds_a_prerequisite_and_names_it_in_the_history(client, project, checkout):
    payments = factories.flag(project, "payments")
    as_role(client, project, "editor")
    response = post_prerequisite(client, checkout, payments, "development")
    assert response.status_code == 302, errors_of(response)
    prerequisite = Prerequisite.objects.get(flag=checkout)
    assert (prerequisite.required_flag, prerequisite.variants) == (payments, ["on"])
    assert "payments in ['on']" in LogEntry.objects.get(action_flag=CHANGE).get_change_message()


def test_a_prerequisite_cycle_is_refused(client, project, checkout):
    payments = factories.flag(project, "payments")
    requirement = {"flag": "new-checkout", "variants": ["on"]}
    factories.configure(payments, "development", prerequisites=[requirement])
    as_role(client, project, "editor")
    response = post_prerequisite(client, checkout, payments, "development")
    assert "a cycle" in errors_of(response)


def test_editor_sees_production_rows_locked(client, project, checkout):
    factories.configure(checkout, "production", rules=[STAFF_RULE])
    as_role(client, project, "editor")
    response = client.get(flag_url(checkout))
    configs, rules = (
        inline.formset
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.model in (FlagConfig, Rule)
    )
    production_config = configs.forms[ENVIRONMENT_ROWS["production"]]
    editable = ("enabled", "off_variant", "serve_variant", "rollout", "bucket_by")
    assert all(production_config.fields[name].disabled for name in editable)
    assert not configs.forms[ENVIRONMENT_ROWS["development"]].fields["enabled"].disabled
    production_rule, *blank_rows = rules.forms
    assert production_rule.fields["DELETE"].disabled
    # One blank row in each tab the editor may add a rule to: not production's.
    assert [row.instance.environment.key for row in blank_rows] == ["development", "staging"]
    new_row_choices = {env.key for env in rules.empty_form.fields["environment"].queryset}
    assert new_row_choices == {"development", "staging"}


def test_editor_cannot_change_production_through_the_flag_page(client, project, checkout):
    factories.configure(checkout, "production", rules=[STAFF_RULE])
    as_role(client, project, "editor")
    before = json.dumps(
        {
            "config": list(FlagConfig.objects.filter(environment__key="production").values()),
            "rules": list(Rule.objects.values()),
        },
        default=str,
    )
    # A forged post: production rows switched on, its rule deleted, a new rule added there.
    response = post_flag_page(
        client,
        checkout,
        **{
            "configs-2-enabled": "on",
            "rules-0-DELETE": "on",
            "rules-0-serve_variant": "off",
            **new_rule("production", 1),
        },
    )
    assert "Select a valid choice" in errors_of(response)
    after = json.dumps(
        {
            "config": list(FlagConfig.objects.filter(environment__key="production").values()),
            "rules": list(Rule.objects.values()),
        },
        default=str,
    )
    assert after == before
    # Without the forged new row, the locked rows' posted values are ignored.
    response = post_flag_page(
        client, checkout, **{"configs-2-enabled": "on", "rules-0-DELETE": "on"}
    )
    assert response.status_code == 302, errors_of(response)
    assert factories.config(checkout, "production").enabled is False
    assert Rule.objects.filter(environment__key="production").count() == 1


def test_publisher_changes_production_through_the_flag_page(client, project, checkout):
    as_role(client, project, "publisher")
    review = post_flag_page(client, checkout, **{"configs-2-enabled": "on"})
    assert is_review(review) and not factories.config(checkout, "production").enabled
    response = confirm_review(client, review, "launch")
    assert response.status_code == 302, errors_of(response)
    assert factories.config(checkout, "production").enabled is True


def test_viewer_reads_the_flag_page_but_cannot_change_anything(client, project, checkout):
    as_role(client, project, "viewer")
    page = client.get(flag_url(checkout))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    response = client.post(flag_url(checkout), {"name": "hijacked"})
    assert response.status_code == 403
    assert client.get(reverse("admin:flags_flag_add")).status_code == 403
    checkout.refresh_from_db()
    assert checkout.name != "hijacked"


def test_flag_history_lists_admin_changes(client, project, checkout):
    as_role(client, project, "editor")
    client.post(toggle_url(checkout, "development"), {"enabled": "on"})
    response = client.get(reverse("admin:flags_flag_history", args=[checkout.pk]))
    assert response.status_code == 200
    assert "Turned on in Development." in response.content.decode()


# --- Adding flags ------------------------------------------------------------------------


def add_flag_data(project, **fields) -> dict:
    return {
        "project": str(project.pk),
        "key": "dark-mode",
        "name": "Dark mode",
        "type": "boolean",
        "description": "",
        "tag_names": "ui",
        "owner": "",
        "salt": "",
        "variants-TOTAL_FORMS": "0",
        "variants-INITIAL_FORMS": "0",
        "variants-MIN_NUM_FORMS": "0",
        "variants-MAX_NUM_FORMS": "1000",
        **fields,
    }


def test_adding_a_boolean_flag_makes_it_in_every_environment(client, project):
    user = as_role(client, project, "editor")
    response = client.post(reverse("admin:flags_flag_add"), add_flag_data(project))
    flag = Flag.objects.get(key="dark-mode")
    assert response.status_code == 302
    assert response.url == reverse("admin:flags_flag_changelist")
    assert list(flag.variants.values_list("key", flat=True)) == ["on", "off"]
    assert FlagConfig.objects.filter(flag=flag).count() == 3
    assert AuditEntry.objects.filter(action="create", object_type="flag", actor=user).exists()
    log = LogEntry.objects.get(object_id=str(flag.pk))
    assert log.action_flag == ADDITION


def test_adding_a_string_flag_takes_its_variants_inline(client, project):
    as_role(client, project, "editor")
    variants = {
        "variants-TOTAL_FORMS": "2",
        "variants-0-key": "blue",
        "variants-0-value": "blue",  # plain text is a string
        "variants-0-position": "0",
        "variants-1-key": "green",
        "variants-1-value": '"green"',
        "variants-1-position": "1",
    }
    data = add_flag_data(project, key="banner", type="string", **variants)
    response = client.post(reverse("admin:flags_flag_add"), data)
    assert response.status_code == 302
    flag = Flag.objects.get(key="banner")
    assert list(flag.variants.values_list("key", "value")) == [("blue", "blue"), ("green", "green")]


def test_a_string_flag_without_variants_is_refused(client, project):
    as_role(client, project, "editor")
    response = client.post(
        reverse("admin:flags_flag_add"), add_flag_data(project, key="banner", type="string")
    )
    assert "needs its variants listed" in errors_of(response)
    assert not Flag.objects.filter(key="banner").exists()


def test_a_variant_of_the_wrong_type_is_refused(client, project):
    as_role(client, project, "editor")
    variants = {"variants-TOTAL_FORMS": "1", "variants-0-key": "big", "variants-0-value": "huge"}
    data = add_flag_data(project, key="limit", type="number", **variants)
    response = client.post(reverse("admin:flags_flag_add"), data)
    assert "must be a number for a number flag" in errors_of(response)
    assert not Flag.objects.filter(key="limit").exists()


def test_a_bad_tag_is_shown_on_the_form(client, project):
    as_role(client, project, "editor")
    data = add_flag_data(project, tag_names="Not A Slug")
    response = client.post(reverse("admin:flags_flag_add"), data)
    assert "Not A Slug" in errors_of(response)
    assert not Flag.objects.filter(key="dark-mode").exists()
    assert not AuditEntry.objects.filter(object_type="flag").exists()


def test_a_variant_in_use_cannot_be_removed(client, project):
    flag = factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "blue", "value": "blue"}, {"key": "green", "value": "green"}],
    )
    factories.configure(flag, "development", defaultServe={"variant": "green"})
    as_role(client, project, "editor")
    response = post_flag_page(client, flag, **{"variants-1-DELETE": "on"})
    assert "in use" in errors_of(response)
    assert flag.variants.count() == 2


def test_viewers_cannot_add_flags(client, project):
    as_role(client, project, "viewer")
    response = client.post(reverse("admin:flags_flag_add"), add_flag_data(project))
    assert response.status_code == 403
    assert not Flag.objects.filter(key="dark-mode").exists()


# --- Segments ----------------------------------------------------------------------------


def segment_data(project, **fields) -> dict:
    return {
        "project": str(project.pk),
        "key": "beta",
        "name": "Beta",
        "description": "",
        "conditions": '[{"attribute": "email", "operator": "ends_with", "values": ["@x.io"]}]',
        "included": "user-1\nuser-2",
        "excluded": "",
        **fields,
    }


def test_segments_are_created_and_changed_through_the_services(client, project):
    as_role(client, project, "editor")
    response = client.post(reverse("admin:flags_segment_add"), segment_data(project))
    assert response.status_code == 302
    segment = Segment.objects.get(key="beta")
    assert segment.included == ["user-1", "user-2"]
    assert AuditEntry.objects.filter(object_type="segment", action="create").exists()
    url = reverse("admin:flags_segment_change", args=[segment.pk])
    data = segment_data(project, name="Beta testers")
    data.pop("project"), data.pop("key")
    assert client.post(url, data).status_code == 302
    assert AuditEntry.objects.filter(object_type="segment", action="update").exists()


def test_an_invalid_segment_shows_the_error(client, project):
    as_role(client, project, "editor")
    nested = '[{"operator": "in_segment", "values": ["other"]}]'
    response = client.post(
        reverse("admin:flags_segment_add"), segment_data(project, conditions=nested)
    )
    assert "cannot refer to another segment" in str(response.context["adminform"].form.errors)
    assert not Segment.objects.exists()


def test_a_segment_in_use_is_not_deleted(client, project, checkout):
    from flags import services

    segment = services.segment_create(project=project, key="beta", data={}, **factories.SYSTEM)
    in_beta = [{"operator": "in_segment", "values": ["beta"]}]
    rule = {"conditions": in_beta, "serve": {"variant": "on"}}
    factories.configure(checkout, "development", rules=[rule])
    as_role(client, project, "editor")
    url = reverse("admin:flags_segment_delete", args=[segment.pk])
    response = client.post(url, {"post": "yes"}, follow=True)
    assert any("new-checkout" in message for message in messages_of(response))
    assert Segment.objects.filter(pk=segment.pk).exists()


# --- Projects, roles and keys ------------------------------------------------------------


def test_a_project_made_in_the_admin_gets_the_default_environments(client):
    client.force_login(factories.user(superuser=True))
    data = {"key": "blog", "name": "Blog", "description": "", "require_approval": ""}
    response = client.post(reverse("admin:flags_project_add"), data)
    assert response.status_code == 302
    project = Project.objects.get(key="blog")
    assert list(project.environments.values_list("key", "protected")) == [
        ("development", False),
        ("staging", False),
        ("production", True),
    ]
    assert AuditEntry.objects.filter(object_type="project", action="create").exists()
    assert LogEntry.objects.filter(object_id=str(project.pk), action_flag=ADDITION).exists()


def test_only_superusers_add_projects(client, project):
    as_role(client, project, "admin")
    assert client.get(reverse("admin:flags_project_add")).status_code == 403


def test_project_admins_add_environments_through_the_service(client, project, checkout):
    as_role(client, project, "admin")
    url = reverse("admin:flags_project_change", args=[project.pk])
    data = form_data(client.get(url))
    data.update(
        {
            "environments-TOTAL_FORMS": "4",
            "environments-3-key": "qa",
            "environments-3-name": "QA",
            "name": "Shop",
        }
    )
    response = client.post(url, data)
    assert response.status_code == 302, errors_of(response)
    qa = Environment.objects.get(project=project, key="qa")
    assert FlagConfig.objects.filter(environment=qa, flag=checkout).exists()
    assert AuditEntry.objects.filter(object_type="environment", action="create").exists()
    assert AuditEntry.objects.filter(object_type="project", action="update").exists()


def test_editors_cannot_change_projects_or_roles(client, project):
    as_role(client, project, "editor")
    url = reverse("admin:flags_project_change", args=[project.pk])
    assert client.post(url, {"name": "Mine"}).status_code == 403
    assert client.get(reverse("admin:flags_membership_add")).status_code == 403


def test_project_admins_manage_roles_through_the_service(client, project):
    as_role(client, project, "admin")
    newcomer = factories.user("newcomer")
    data = {"project": str(project.pk), "user": str(newcomer.pk), "role": "editor"}
    response = client.post(reverse("admin:flags_membership_add"), data)
    assert response.status_code == 302
    membership = Membership.objects.get(user=newcomer)
    assert membership.role == "editor"
    entry = AuditEntry.objects.get(object_type="membership")
    assert (entry.before, entry.after) == ({"role": None}, {"role": "editor"})
    delete = reverse("admin:flags_membership_delete", args=[membership.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 302
    assert not Membership.objects.filter(user=newcomer).exists()
    assert AuditEntry.objects.filter(object_type="membership").count() == 2


def test_an_api_key_secret_is_shown_once_and_stored_hashed(client, project):
    as_role(client, project, "admin")
    production = factories.environment(project, "production")
    data = {"environment": str(production.pk), "kind": "server", "name": "web", "expires_at": ""}
    response = client.post(reverse("admin:flags_apikey_add"), data, follow=True)
    key = ApiKey.objects.get()
    (shown,) = [m for m in messages_of(response) if "not shown again" in m]
    secret = re.search(r"<code[^>]*>(ffs_[\w-]+)</code>", shown).group(1)
    assert key.digest == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert key.created_by is not None
    again = client.get(reverse("admin:flags_apikey_changelist")).content.decode()
    detail = client.get(reverse("admin:flags_apikey_change", args=[key.pk])).content.decode()
    for page in (response.content.decode(), again, detail):
        assert key.digest not in page
    assert secret not in again and secret not in detail
    assert AuditEntry.objects.filter(object_type="api_key", action="create").exists()


def test_an_expiry_in_the_past_is_shown_on_the_form(client, project):
    as_role(client, project, "admin")
    production = factories.environment(project, "production")
    data = {
        "environment": str(production.pk),
        "kind": "client",
        "name": "app",
        "expires_at_0": "2001-01-01",
        "expires_at_1": "00:00:00",
    }
    response = client.post(reverse("admin:flags_apikey_add"), data)
    assert "must be in the future" in str(response.context["adminform"].form.errors)
    assert not ApiKey.objects.exists()


def test_keys_are_revoked_through_the_service(client, project):
    from flags import services

    environment = factories.environment(project, "production")
    key, _ = services.api_key_create(
        environment=environment, kind="server", name="web", **factories.SYSTEM
    )
    as_role(client, project, "admin")
    client.post(
        reverse("admin:flags_apikey_changelist"),
        {"action": "revoke_keys", "_selected_action": [str(key.pk)]},
    )
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert AuditEntry.objects.filter(object_type="api_key", action="revoke").exists()


@pytest.mark.parametrize("role", ["viewer", "editor", "publisher"])
def test_only_project_admins_see_keys(client, project, role):
    as_role(client, project, role)
    assert client.get(reverse("admin:flags_apikey_changelist")).status_code == 403
    assert client.get(reverse("admin:flags_apikey_add")).status_code == 403


# --- The audit log -----------------------------------------------------------------------


@pytest.mark.parametrize("superuser", [False, True])
def test_the_audit_log_cannot_be_edited_or_deleted(client, project, checkout, superuser):
    if superuser:
        client.force_login(factories.user(superuser=True))
    else:
        as_role(client, project, "admin")
    entry = AuditEntry.objects.filter(flag_key="new-checkout").first()
    change = reverse("admin:flags_auditentry_change", args=[entry.pk])
    page = client.get(change)
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert client.post(change, {"action": "hacked"}).status_code == 403
    delete = reverse("admin:flags_auditentry_delete", args=[entry.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    assert client.get(reverse("admin:flags_auditentry_add")).status_code == 403
    listing = client.post(
        reverse("admin:flags_auditentry_changelist"),
        {"action": "delete_selected", "_selected_action": [str(entry.pk)]},
    )
    assert listing.status_code in (200, 302)
    entry.refresh_from_db()
    assert entry.action == "create"


def test_the_audit_log_filters_by_project_flag_actor_and_time(client, project, checkout):
    user = as_role(client, project, "editor")
    client.post(toggle_url(checkout, "development"), {"enabled": "on"})
    factories.flag(factories.project("elsewhere"), "hidden-flag")
    url = reverse("admin:flags_auditentry_changelist")

    def listed(**query):
        response = client.get(url, query)
        assert response.status_code == 200
        return [(e.flag_key, e.action) for e in response.context["cl"].result_list]

    assert ("hidden-flag", "create") not in listed()
    assert listed(flag_key="new-checkout") == [
        ("new-checkout", "enable"),
        ("new-checkout", "create"),
    ]
    assert listed(actor=user.username) == [("new-checkout", "enable")]
    assert listed(project__id__exact=str(project.pk), action="enable") == [
        ("new-checkout", "enable")
    ]
    assert listed(created_at__gte="2000-01-01 00:00:00+00:00", flag_key="new-checkout")
    assert listed(created_at__gte="2999-01-01 00:00:00+00:00") == []


def test_publisher_cannot_bypass_required_approval_through_the_flag_page(client, project, checkout):
    project.require_approval = True
    project.save()
    as_role(client, project, "publisher")
    response = client.get(flag_url(checkout))
    configs = next(
        inline.formset
        for inline in response.context["inline_admin_formsets"]
        if inline.formset.model is FlagConfig
    )
    # Production is editable, but saving it goes through the review to a change request.
    assert not configs.forms[ENVIRONMENT_ROWS["production"]].fields["enabled"].disabled
    review = post_flag_page(client, checkout, **{"configs-2-enabled": "on"})
    assert is_review(review) and review.context["reviews"][0].mode == "propose"
    response = confirm_review(client, review, "launch")
    assert response.status_code == 302
    assert ChangeRequest.objects.get(config__flag=checkout).data["enabled"] is True
    assert factories.config(checkout, "production").enabled is False
    # Unprotected environments stay directly editable.
    response = post_flag_page(client, checkout, **{"configs-0-enabled": "on"})
    assert response.status_code == 302, errors_of(response)
    assert factories.config(checkout, "development").enabled is True


def test_saving_a_stale_flag_page_is_refused_and_overwrites_nothing(client, project, checkout):
    as_role(client, project, "editor")
    stale = form_data(client.get(flag_url(checkout)))
    # Meanwhile someone else switches the flag on in development.
    factories.configure(checkout, "development", enabled=True)
    stale["name"] = "Renamed on a stale page"
    response = client.post(flag_url(checkout), stale)
    assert "Someone changed this flag" in errors_of(response)
    checkout.refresh_from_db()
    assert checkout.name != "Renamed on a stale page"
    assert factories.config(checkout, "development").enabled is True
    # Reloaded, the same change goes through.
    response = post_flag_page(client, checkout, name="Renamed on a fresh page")
    assert response.status_code == 302, errors_of(response)


def test_flag_page_shows_rollout_weights_as_the_percentages_users_get(client, project, checkout):
    def split(on: int, off: int) -> dict:
        variants = [{"variant": "on", "weight": on}, {"variant": "off", "weight": off}]
        return {"defaultServe": {"rollout": {"variants": variants}}}

    factories.configure(checkout, "development", **split(1, 3))
    factories.configure(checkout, "staging", **split(1, 99999))
    imported = factories.flag(project, "imported", bucketing="unleash")
    as_role(client, project, "viewer")
    page = client.get(reverse("admin:flags_flag_change", args=[checkout.pk])).content.decode()
    assert "on 25% · off 75%" in page
    assert "on 0.001% · off 99.999%" in page
    other = client.get(reverse("admin:flags_flag_change", args=[imported.pk])).content.decode()
    assert "unleash" in other  # the scheme an import brought is shown, not editable
    assert 'name="bucketing"' not in other


def test_rollout_split_of_odd_weights():
    from flags.admin.flags import rollout_split

    assert rollout_split([]) == "-"
    assert rollout_split([{"variant": "a", "weight": 0}]) == "-"
    assert rollout_split([{"variant": "a", "weight": 1}, {"variant": "b", "weight": 2}]) == (
        "a 33.333% · b 66.667%"
    )
    tiny = [{"variant": "a", "weight": 1}, {"variant": "b", "weight": 10_000_000}]
    assert rollout_split(tiny) == "a <0.001% · b >99.999%"
