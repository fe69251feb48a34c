"""The flag list's serving column and the flag page's tabs, through the admin's pages."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from flags import schedules
from flags.models import ExposureCount, Rule
from tests import factories
from tests.flags.test_admin import (
    as_role,
    errors_of,
    flag_url,
    form_data,
    new_rule,
    post_flag_page,
    state_cell,
)

pytestmark = pytest.mark.django_db

THIRTY_PERCENT = {
    "rollout": {"variants": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]}
}
PRO_IN_US = {
    "name": "Pro in US",
    "conditions": [{"attribute": "plan", "operator": "equals", "values": ["pro"]}],
    "serve": {"variant": "on"},
}


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def checkout(project):
    return factories.flag(project, "new-checkout")


def panel(response, panel_id: str) -> str:
    """The HTML of one tab's panel of the flag page."""
    html = response.content.decode()
    found = re.search(rf'<section [^>]*id="{panel_id}".*?</section>', html, re.S)
    assert found, f"no panel {panel_id}"
    return found.group(0)


# --- The list ----------------------------------------------------------------------------


def test_list_shows_what_each_environment_serves_beside_its_switch(client, project, checkout):
    factories.configure(
        checkout, "production", enabled=True, rules=[PRO_IN_US], defaultServe=THIRTY_PERCENT
    )
    factories.configure(checkout, "staging", enabled=True)
    as_role(client, project, "publisher")
    response = client.get(reverse("admin:flags_flag_changelist"))
    production = state_cell(response, checkout, "production")
    assert ">On</button>" in production
    assert '<span class="flag-serving">30% on · 1 rule</span>' in production
    # Plain on and off say no more than the switch does.
    assert "flag-serving" not in state_cell(response, checkout, "staging")
    assert "flag-serving" not in state_cell(response, checkout, "development")


def _listed_flags(project, count: int) -> None:
    for number in range(count):
        flag = factories.flag(project, f"flag-{number}")
        factories.configure(
            flag,
            "staging",
            enabled=True,
            rules=[PRO_IN_US],
            targets=[{"variant": "on", "values": ["user-1"]}],
            defaultServe=THIRTY_PERCENT,
        )


def test_the_list_reads_a_bounded_number_of_queries_for_fifty_flags(
    client, project, django_assert_max_num_queries
):
    _listed_flags(project, 50)
    as_role(client, project, "editor")
    url = reverse("admin:flags_flag_changelist")
    client.get(url)  # sessions and the like, once
    # 20 today: the page's own reads, and one each for the flags' configurations, rules,
    # targets, prerequisites, tags and variants, however many flags are listed.
    with django_assert_max_num_queries(25) as captured:
        response = client.get(url)
    assert response.content.decode().count("30% on · 1 rule · 1 target") == 50 * 1
    fifty = len(captured)
    for flag in project.flags.all()[:45]:
        flag.delete()
    with django_assert_max_num_queries(fifty) as few:
        client.get(url)
    assert len(few) == fifty, "the query count does not grow with the number of flags"


# --- The flag page's tabs ----------------------------------------------------------------


def test_each_environment_has_a_tab_with_only_its_rows(client, project, checkout):
    factories.configure(checkout, "production", enabled=True, rules=[PRO_IN_US])
    factories.configure(checkout, "staging", rules=[{**PRO_IN_US, "name": "Staff"}])
    as_role(client, project, "publisher")
    response = client.get(flag_url(checkout))
    html = response.content.decode()
    tabs = re.findall(r'role="tab" id="tab-([\w-]+)"', html)
    assert tabs == [
        "env-development",
        "env-staging",
        "env-production",
        "history",
        "evaluations",
        "schedule",
        "audit",
    ]
    production = panel(response, "env-production")
    assert "On · rule <em>Pro in US</em> → on · everyone else: on" in production
    assert 'value="Pro in US"' in production and "Staff" not in production
    assert 'value="Staff"' in panel(response, "env-staging")
    assert "Off → serves off" in panel(response, "env-development")
    # Each tab has its switch, labelled, and a blank rule row of its own.
    for key in ("development", "staging", "production"):
        assert f"Enabled in {key.capitalize()}</label>" in panel(response, f"env-{key}")
        assert panel(response, f"env-{key}").count("flag-new-row") == 3  # rule, target, prereq


def test_a_rule_typed_in_a_tabs_blank_row_is_added_in_that_environment(client, project, checkout):
    as_role(client, project, "editor")
    response = client.get(flag_url(checkout))
    data = form_data(response)
    rules = next(
        i.formset for i in response.context["inline_admin_formsets"] if i.formset.prefix == "rules"
    )
    staging_row = next(f for f in rules.forms if f.instance.environment.key == "staging")
    data[f"{staging_row.prefix}-name"] = "Beta testers"
    response = client.post(flag_url(checkout), data)
    assert response.status_code == 302, errors_of(response)
    rule = Rule.objects.get(flag=checkout)
    assert (rule.environment.key, rule.name, rule.serve_variant, rule.rollout) == (
        "staging",
        "Beta testers",
        "on",
        [],
    )
    assert rule.conditions == []


def test_a_new_rule_posted_with_null_boxes_saves_as_empty_lists(client, project, checkout):
    as_role(client, project, "editor")
    changes = new_rule("development", 0, name="Staff", conditions="null", rollout="null")
    response = post_flag_page(client, checkout, **changes)
    assert response.status_code == 302, errors_of(response)
    rule = Rule.objects.get(flag=checkout)
    assert (rule.conditions, rule.serve_variant, rule.rollout) == ([], "on", [])


def test_a_new_rule_rows_boxes_start_empty_not_null(client, project, checkout):
    as_role(client, project, "editor")
    html = panel(client.get(flag_url(checkout)), "env-development")
    assert "null</textarea>" not in html
    assert re.search(
        r'<select name="rules-0-serve_variant"[^>]*>.*?<option value="on" selected', html, re.S
    )


def test_the_add_page_shows_a_boolean_flags_on_and_off_not_nulls(client, project):
    as_role(client, project, "editor")
    html = client.get(reverse("admin:flags_flag_add")).content.decode()
    assert "null</textarea>" not in html
    assert 'name="variants-0-key" value="on"' in html
    assert 'name="variants-1-key" value="off"' in html
    # The only project the editor may add flags to is chosen already.
    assert f'<option value="{project.pk}" selected>' in html


def test_history_evaluations_schedule_and_audit_tabs(client, project, checkout):
    config = factories.configure(checkout, "production", enabled=True)
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    for variant, count in (("on", 300), ("off", 100)):
        ExposureCount.objects.create(
            environment=config.environment,
            flag_key=checkout.key,
            variant=variant,
            reason="STATIC",
            hour=hour,
            count=count,
            last_at=timezone.now(),
        )
    schedules.schedule_create(
        config=config,
        data={"enabled": False},
        run_at=timezone.now() + timedelta(days=1),
        actor=None,
        source="cli",
    )
    as_role(client, project, "viewer")
    response = client.get(flag_url(checkout))
    history = panel(response, "history")
    assert "(version 2;" in history and "<li>enabled: off → on</li>" in history
    versions = reverse("admin:flags_rollout_versions", args=[config.pk])
    assert f'href="{versions}">Restore…</a>' in history
    evaluations = panel(response, "evaluations")
    assert "400 in all" in evaluations
    assert re.search(r'<th scope="row">on</th>.*?width="100.0%".*?300.*?75%', evaluations, re.S)
    assert re.search(r'<th scope="row">off</th>.*?width="33.3%".*?100.*?25%', evaluations, re.S)
    assert "<td>enabled: off</td>" in panel(response, "schedule")  # the change in words
    audit = panel(response, "audit")
    assert "enable flag_config new-checkout/production" in audit


def test_a_viewer_reads_the_tabs_without_a_box_to_change(client, project, checkout):
    factories.configure(checkout, "staging", rules=[PRO_IN_US])
    as_role(client, project, "viewer")
    staging = panel(client.get(flag_url(checkout)), "env-staging")
    assert "Pro in US" in staging
    assert "<textarea" not in staging and "<select" not in staging
    assert "flag-new-row" not in staging


@pytest.mark.parametrize("environment", ["OTHER", "abc", "1\x00", "\\ud800", "9" * 40, ""])
def test_a_blank_rows_environment_forged_is_a_form_error(client, project, checkout, environment):
    other = factories.project("elsewhere")
    if environment == "OTHER":
        environment = str(factories.environment(other, "development").pk)
    as_role(client, project, "editor")
    response = client.get(flag_url(checkout))
    data = form_data(response)
    rules = next(
        i.formset for i in response.context["inline_admin_formsets"] if i.formset.prefix == "rules"
    )
    row = rules.forms[0].prefix
    data[f"{row}-name"] = "Forged"
    data[f"{row}-environment"] = environment
    response = client.post(flag_url(checkout), data)
    assert response.status_code == 200
    expected = "This field is required" if environment == "" else "Select a valid choice"
    assert expected in errors_of(response)
    assert not Rule.objects.exists()
