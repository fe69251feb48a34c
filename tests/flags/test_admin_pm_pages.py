"""The admin's pages for product managers: the start page's dashboard, the audit log,
confirmations with a comment for protected environments, the project page's environments,
and what each page does with an address it cannot use."""

import html
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.urls import reverse

from flags import schedules, services
from flags.auditlog import ACTION_GROUPS, entry_changes
from flags.models import AuditEntry, ChangeRequest, Flag, ScheduledChange
from tests import factories
from tests.flags.test_admin import form_data, messages_of

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop", name="Shop")


@pytest.fixture
def checkout(project):
    return factories.flag(project, "new-checkout")


def login(client, project, role):
    user = factories.member(project, role)
    client.force_login(user)
    return user


def text_of(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.content.decode()))


def switch_url(flag, environment_key="production", enabled="on"):
    config = factories.config(flag, environment_key)
    url = reverse("admin:flags_rollout_confirm_switch", args=[config.pk])
    return f"{url}?enabled={enabled}"


def audit_list(client, **query):
    return client.get(reverse("admin:flags_auditentry_changelist"), query)


# --- The audit log -----------------------------------------------------------------------


def test_the_audit_log_shows_what_changed_line_by_line(client, project, checkout):
    factories.configure(checkout, "development", enabled=True)
    services.project_update(project=project, data={"name": "Store"}, **factories.SYSTEM)
    login(client, project, "viewer")

    page = text_of(audit_list(client))

    assert "enabled: off → on" in page
    assert "name: Shop → Store" in page
    assert '"defaultServe"' not in page.split("<details>")[0]  # no JSON dump in the list


def test_the_audit_diff_names_only_the_changed_keys(project):
    before = {"name": "Shop", "description": "", "requireApproval": False}
    after = {"name": "Shop", "description": "Our shop", "requireApproval": True}
    entry = AuditEntry(action="update", before=before, after=after)
    assert entry_changes(entry) == ["description: (empty) → Our shop", "requireApproval: off → on"]
    nested = AuditEntry(action="update", before={"a": {"b": 1, "c": 2}}, after={"a": {"b": 1}})
    assert entry_changes(nested) == ["a.c: 2 (removed)"]


def test_audit_times_are_shown_with_minutes_and_seconds(client, project, checkout):
    entry = AuditEntry.objects.filter(object_type="flag").get()
    on_the_hour = datetime(2026, 3, 4, 15, 0, 0, tzinfo=UTC)
    AuditEntry.objects.filter(pk=entry.pk).update(created_at=on_the_hour)
    login(client, project, "viewer")
    assert "2026-03-04 15:00:00" in text_of(audit_list(client))


def test_the_action_filter_keeps_one_choice_per_kind_of_action(client, project, checkout):
    for enabled in (True, False, True, False):
        factories.configure(checkout, "development", enabled=enabled)
    config = factories.config(checkout, "development")
    for version in (2, 3, 4):
        services.version_restore(config=config, version=version, **factories.SYSTEM)
        config.refresh_from_db()
    assert AuditEntry.objects.filter(action__startswith="restore v").values("action").count() == 3
    login(client, project, "viewer")

    response = audit_list(client)
    (action_filter,) = [f for f in response.context["cl"].filter_specs if f.title == "action"]
    assert len(action_filter.lookup_choices) == len(ACTION_GROUPS)

    restores = audit_list(client, action_group="restore").context["cl"].result_list
    assert sorted(entry.action for entry in restores) == ["restore v2", "restore v3", "restore v4"]
    switches = audit_list(client, action_group="switch").context["cl"].result_list
    assert {entry.action for entry in switches} == {"enable", "disable"}


# --- Stale flags -------------------------------------------------------------------------


def test_a_flag_younger_than_the_window_is_not_stale(client, project, settings):
    settings.STALE_FLAG_DAYS = 30
    old = factories.flag(project, "old-banner")
    Flag.objects.filter(pk=old.pk).update(created_at=datetime.now(UTC) - timedelta(days=31))
    factories.flag(project, "made-just-now")
    login(client, project, "viewer")

    stale = text_of(client.get(reverse("admin:flags_rollout_stale")))
    dashboard = text_of(client.get(reverse("admin:index")))
    dashboard = dashboard.split('id="dashboard-stale"')[1].split("</div>")[0]

    for page in (stale, dashboard):
        assert "old-banner" in page
        assert "made-just-now" not in page
    assert "Stale flags (1)" in dashboard
    assert reverse("admin:flags_rollout_stale") in dashboard


# --- The start page ----------------------------------------------------------------------


def test_the_start_page_lists_requests_to_review_and_recent_changes(client, project, checkout):
    project.require_approval = True
    project.save()
    editor = factories.member(project, "editor", username="ed")
    change = services_propose(checkout, editor)
    factories.configure(checkout, "development", enabled=True)
    login(client, project, "publisher")

    page = text_of(client.get(reverse("admin:index")))

    review = reverse("admin:flags_rollout_request", args=[change.pk])
    assert f'href="{review}"' in page and "Go live" in page and "review" in page
    assert "switched on flag new-checkout/development" in page
    assert "enabled: off → on" in page
    assert page.index("Change requests waiting") < page.index("app-flags module")


def undo_links(client) -> list[str]:
    page = client.get(reverse("admin:index")).content.decode()
    return re.findall(r'class="flags-undo" href="([^"]+)"', page)


def restore_url(flag, environment_key: str, version: int) -> str:
    config = factories.config(flag, environment_key)
    return reverse("admin:flags_rollout_confirm_restore", args=[config.pk, version])


def test_the_start_page_offers_to_undo_only_the_newest_change_of_a_configuration(
    client, project, checkout
):
    factories.configure(checkout, "production", enabled=True)  # version 2
    factories.configure(checkout, "production", offVariant="on")  # version 3
    factories.configure(checkout, "staging", enabled=True)  # version 2
    login(client, project, "publisher")

    assert undo_links(client) == [
        restore_url(checkout, "staging", 1),
        restore_url(checkout, "production", 2),
    ], "the newest change of each configuration, newest first; never an older one"


def test_nothing_to_undo_for_a_first_version_a_flag_change_or_a_viewer(client, project, checkout):
    login(client, project, "viewer")
    factories.configure(checkout, "production", enabled=True)
    assert undo_links(client) == [], "a viewer may not restore"

    login(client, project, "publisher")
    assert undo_links(client) == [restore_url(checkout, "production", 1)]
    services.flag_update(flag=checkout, data={"description": "Checkout v2"}, **factories.SYSTEM)
    assert undo_links(client) == [], "a newer change of the flag is not in the version"


def services_propose(flag, author, title="Go live"):
    from flags import approvals

    return approvals.change_request_create(
        config=factories.config(flag, "production"),
        data={"enabled": True},
        title=title,
        actor=author,
        source="admin",
    )


def test_people_see_only_their_projects_on_the_start_page(client, project, checkout):
    other = factories.project("secret-project")
    factories.flag(other, "hidden-flag")
    login(client, project, "viewer")
    page = text_of(client.get(reverse("admin:index")))
    assert "new-checkout" in page
    assert "hidden-flag" not in page


# --- Confirmations for protected environments --------------------------------------------


def test_the_list_sends_protected_environments_to_a_confirmation(client, project, checkout):
    login(client, project, "publisher")
    page = client.get(reverse("admin:flags_flag_changelist")).content.decode()
    production = factories.config(checkout, "production")
    development = factories.environment(project, "development")
    confirm = reverse("admin:flags_rollout_confirm_switch", args=[production.pk])
    assert f'formaction="{confirm}?next=' in page
    assert reverse("admin:flags_flag_toggle", args=[checkout.pk, development.pk]) in page


@pytest.mark.parametrize(
    ("role", "enabled", "shown"),
    [("publisher", True, True), ("publisher", False, False), ("editor", True, False)],
)
def test_the_list_offers_the_kill_switch_where_production_is_on_and_the_role_may(
    client, project, checkout, role, enabled, shown
):
    factories.configure(checkout, "production", enabled=enabled)
    factories.configure(checkout, "development", enabled=True)  # not protected: its button
    login(client, project, role)
    page = client.get(reverse("admin:flags_flag_changelist")).content.decode()
    kill = reverse(
        "admin:flags_rollout_confirm_kill", args=[factories.config(checkout, "production").pk]
    )
    assert (f'class="flags-kill-list" href="{kill}"' in page) is shown
    assert page.count('class="flags-kill-list"') == int(shown)


def test_switching_production_shows_the_change_and_keeps_the_comment(client, project, checkout):
    login(client, project, "publisher")
    url = switch_url(checkout)

    # The list's button posts `enabled`: the page shows what changes, nothing is written yet.
    shown = client.post(url.split("?")[0] + "?next=/admin/flags/flag/", {"enabled": "on"})
    assert shown.status_code == 200
    assert "enabled: off → on" in text_of(shown)
    assert factories.config(checkout, "production").enabled is False

    response = client.post(
        url + "&next=/admin/flags/flag/",
        {"enabled": "on", "version": "1", "comment": "Launch day", "confirm": "Turn on"},
    )

    assert response.status_code == 302 and response["Location"] == "/admin/flags/flag/"
    assert factories.config(checkout, "production").enabled is True
    entry = AuditEntry.objects.get(action="enable", environment__key="production")
    assert entry.comment == "Launch day"


def test_with_approval_the_page_opens_a_change_request(client, project, checkout):
    project.require_approval = True
    project.save()
    login(client, project, "publisher")

    page = text_of(client.get(switch_url(checkout)))
    assert "requires approval" in page and "Open a change request" in page
    assert "POST /api" not in page

    response = client.post(
        switch_url(checkout),
        {"version": "1", "title": "Launch", "comment": "Marketing is ready", "propose": "1"},
    )

    change = ChangeRequest.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:flags_rollout_request", args=[change.pk])
    assert (change.data, change.title, change.status) == ({"enabled": True}, "Launch", "open")
    assert factories.config(checkout, "production").enabled is False
    review = text_of(client.get(response["Location"]))
    assert "Why: Marketing is ready" in review


def test_an_editor_asks_for_production_from_the_list_where_approval_is_required(
    client, project, checkout
):
    from tests.flags.test_admin import state_cell

    project.require_approval = True
    project.save()
    editor = login(client, project, "editor")

    cell = state_cell(client.get(reverse("admin:flags_flag_changelist")), checkout, "production")
    config = factories.config(checkout, "production")
    assert "flag-state-locked" not in cell
    assert reverse("admin:flags_rollout_confirm_switch", args=[config.pk]) in cell
    assert "Ask to turn new-checkout on in Production" in html.unescape(cell)
    page = text_of(client.post(switch_url(checkout), {"enabled": "on"}))  # the button's post
    assert "Open a change request" in page and 'name="confirm"' not in page

    refused = client.post(
        switch_url(checkout),
        {"version": "1", "title": "Launch", "comment": "why\x00", "propose": "1"},
    )
    assert refused.status_code == 400 and "comment" in text_of(refused)
    assert not ChangeRequest.objects.exists()
    direct = client.post(switch_url(checkout), {"version": "1", "confirm": "1"})
    assert direct.status_code == 403
    response = client.post(
        switch_url(checkout),
        {"version": "1", "title": "Launch", "comment": "Marketing is ready", "propose": "1"},
    )
    change = ChangeRequest.objects.get()
    assert response["Location"] == reverse("admin:flags_rollout_request", args=[change.pk])
    assert (change.data, change.author_id, change.status) == ({"enabled": True}, editor.pk, "open")
    assert factories.config(checkout, "production").enabled is False


def test_a_viewer_still_sees_production_locked_where_approval_is_required(
    client, project, checkout
):
    from tests.flags.test_admin import state_cell

    project.require_approval = True
    project.save()
    login(client, project, "viewer")
    cell = state_cell(client.get(reverse("admin:flags_flag_changelist")), checkout, "production")
    assert "flag-state-locked" in cell and "formaction" not in cell


def test_an_editor_is_told_who_may_switch_production(client, project, checkout):
    login(client, project, "editor")
    page = client.get(switch_url(checkout))
    assert "need the publisher role" in text_of(page)
    assert 'name="confirm"' not in page.content.decode()
    refused = client.post(switch_url(checkout), {"version": "1", "confirm": "1"})
    assert refused.status_code == 403
    assert factories.config(checkout, "production").enabled is False


def test_a_confirmation_on_an_old_version_is_refused(client, project, checkout):
    login(client, project, "publisher")
    factories.configure(checkout, "production", offVariant="on")  # version 2 meanwhile
    config = factories.config(checkout, "production")
    restore = reverse("admin:flags_rollout_confirm_restore", args=[config.pk, 1])
    response = client.post(restore, {"version": "1", "confirm": "1"})
    assert response.status_code == 409
    assert "reload" in text_of(response)
    assert factories.config(checkout, "production").version == 2


def test_restoring_a_protected_version_goes_through_its_page(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)
    login(client, project, "publisher")
    config = factories.config(checkout, "production")
    versions = client.get(reverse("admin:flags_rollout_versions", args=[config.pk]))
    restore = reverse("admin:flags_rollout_confirm_restore", args=[config.pk, 1])
    assert restore in versions.content.decode()

    assert "enabled: on → off" in text_of(client.get(restore))
    response = client.post(restore, {"version": "2", "comment": "Too early", "confirm": "1"})

    assert response.status_code == 302
    config.refresh_from_db()
    assert (config.enabled, config.version) == (False, 3)
    assert AuditEntry.objects.get(action="restore v1").comment == "Too early"


def test_the_kill_switch_page_lists_what_it_cancels(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)
    config = factories.config(checkout, "production")
    later = datetime.now(UTC) + timedelta(days=1)
    change = schedules.schedule_create(
        config=config, data={"offVariant": "on"}, run_at=later, **factories.SYSTEM
    )
    login(client, project, "publisher")
    kill = reverse("admin:flags_rollout_confirm_kill", args=[config.pk])
    assert (
        kill
        in client.get(reverse("admin:flags_rollout_versions", args=[config.pk])).content.decode()
    )

    page = text_of(client.get(kill))
    assert "enabled: on → off" in page and f"scheduled change #{change.pk}" in page
    response = client.post(kill, {"version": "2", "comment": "Errors spiking", "confirm": "1"})

    assert response.status_code == 302
    assert factories.config(checkout, "production").enabled is False
    assert ScheduledChange.objects.get().status == "cancelled"
    assert AuditEntry.objects.filter(action="kill", comment="Errors spiking").exists()


def test_the_kill_switch_needs_no_change_request(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)
    project.require_approval = True
    project.save()
    login(client, project, "publisher")
    kill = reverse(
        "admin:flags_rollout_confirm_kill", args=[factories.config(checkout, "production").pk]
    )
    response = client.post(kill, {"version": "2", "confirm": "1"})
    assert response.status_code == 302
    assert factories.config(checkout, "production").enabled is False


def test_the_comment_reaches_the_audit_through_every_service(project, checkout):
    config = factories.config(checkout, "staging")
    services.flag_toggle(config=config, enabled=True, comment=" why ", **factories.SYSTEM)
    assert AuditEntry.objects.get(action="enable").comment == "why"
    services.flag_toggle(config=config, enabled=False, **factories.SYSTEM)  # no comment: fine
    assert AuditEntry.objects.get(action="disable").comment == ""


# --- Breadcrumbs -------------------------------------------------------------------------


@pytest.mark.parametrize("page", ["versions", "exposures", "request"])
def test_the_pages_breadcrumbs_go_through_the_project_and_the_flag(client, project, checkout, page):
    project.require_approval = True
    project.save()
    editor = login(client, project, "editor")
    config = factories.config(checkout, "production")
    target = {
        "versions": reverse("admin:flags_rollout_versions", args=[config.pk]),
        "exposures": reverse("admin:flags_rollout_exposures", args=[config.pk]),
        "request": reverse(
            "admin:flags_rollout_request", args=[services_propose(checkout, editor).pk]
        ),
    }[page]
    crumbs = text_of(client.get(target)).split('class="breadcrumbs">')[1].split("</div>")[0]
    names = re.findall(r">([^<>]+)</a>", crumbs)
    assert names == ["Home", "Flags", "Projects", "Shop", "new-checkout"]


# --- The project page --------------------------------------------------------------------


def test_project_admins_rename_and_protect_environments_on_the_project_page(client, project):
    login(client, project, "admin")
    url = reverse("admin:flags_project_change", args=[project.pk])
    page = client.get(url)
    data = form_data(page)
    assert data["environments-1-name"] == "Staging"
    data.update({"environments-1-name": "Pre-production", "environments-1-protected": "on"})

    response = client.post(url, data)

    assert response.status_code == 302
    staging = factories.environment(project, "staging")
    assert (staging.name, staging.protected) == ("Pre-production", True)
    entry = AuditEntry.objects.get(object_type="environment", action="update")
    assert "protected: off → on" in entry_changes(entry)


def test_viewers_see_the_environments_without_changing_them(client, project):
    login(client, project, "viewer")
    page = client.get(reverse("admin:flags_project_change", args=[project.pk])).content.decode()
    assert "Production" in page and 'name="environments-0-name"' not in page


# --- Addresses and forms the pages cannot use --------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "?enabled=maybe",
        "?enabled=%00",
        "?enabled=on&next=%00",
        "?enabled=%ED%A0%80",
        "?enabled=on&%00=1",
    ],
)
def test_a_bad_query_on_the_switch_page_is_a_400_page(client, project, checkout, query):
    login(client, project, "publisher")
    config = factories.config(checkout, "production")
    response = client.get(reverse("admin:flags_rollout_confirm_switch", args=[config.pk]) + query)
    assert response.status_code == 400
    assert "Bad request" in response.content.decode()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/flags/changerequest/confirm/switch/99999999999999999999999/?enabled=on",
        "/admin/flags/changerequest/confirm/kill/99999999999999999999999/",
        "/admin/flags/changerequest/confirm/restore/{config}/99999999999999999999999/",
        "/admin/flags/changerequest/versions/99999999999999999999999/",
        "/admin/flags/changerequest/99999999999999999999999/review/",
    ],
)
def test_huge_numbers_in_the_address_are_a_400_page(client, project, checkout, path):
    login(client, project, "publisher")
    config = factories.config(checkout, "production")
    response = client.get(path.format(config=config.pk))
    assert response.status_code == 400


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ({"comment": "a\x00b"}, "comment"),
        ({"comment": "x" * 1001}, "comment"),
        ({"version": "99999999999999999999999"}, "version"),
        ({"version": "abc"}, "version"),
    ],
)
def test_a_bad_confirmation_form_names_the_field(client, project, checkout, form, field):
    login(client, project, "publisher")
    response = client.post(switch_url(checkout), {"version": "1", "confirm": "1", **form})
    assert response.status_code in (400, 409)
    assert field in text_of(response)
    assert factories.config(checkout, "production").enabled is False
    assert not AuditEntry.objects.filter(action="enable").exists()


def test_the_start_page_ignores_its_query(client, project, checkout):
    login(client, project, "viewer")
    response = client.get(reverse("admin:index") + "?q=%00&days=99999999999999999999")
    assert response.status_code == 200


def test_the_audit_log_refuses_a_bad_action_filter(client, project, checkout):
    login(client, project, "viewer")
    assert audit_list(client, action_group="a\x00").status_code == 400
    unknown = audit_list(client, action_group="no-such-kind")
    assert unknown.status_code == 200 and list(unknown.context["cl"].result_list) == []


def test_messages_after_a_confirmation_say_what_happened(client, project, checkout):
    login(client, project, "publisher")
    response = client.post(switch_url(checkout), {"version": "1", "confirm": "1"}, follow=True)
    assert "new-checkout is on in Production." in messages_of(response)


def test_the_comment_is_in_the_api_audit_log(client, project, checkout):
    from rest_framework.test import APIClient

    login(client, project, "publisher")
    client.post(switch_url(checkout), {"version": "1", "comment": "Launch", "confirm": "1"})
    api = APIClient()
    api.force_authenticate(factories.user(superuser=True))
    entries = api.get("/api/v1/audit?project=shop&flag=new-checkout").json()["results"]
    assert [entry["comment"] for entry in entries if entry["action"] == "enable"] == ["Launch"]


def test_restoring_what_is_served_now_writes_nothing(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)
    factories.configure(checkout, "production", enabled=False)  # version 3 = version 1
    login(client, project, "publisher")
    config = factories.config(checkout, "production")
    restore = reverse("admin:flags_rollout_confirm_restore", args=[config.pk, 1])
    assert "nothing to restore" in text_of(client.get(restore))
    assert client.post(restore, {"version": "3", "confirm": "1"}).status_code == 409
    assert factories.config(checkout, "production").version == 3


def test_a_confirmation_never_sends_people_off_site(client, project, checkout):
    login(client, project, "publisher")
    url = switch_url(checkout) + "&next=https://elsewhere.example/"
    response = client.post(url, {"version": "1", "confirm": "1"})
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:flags_flag_changelist")


# --- Restore and the kill switch from the flag page's tabs -------------------------------


def flag_page(client, flag) -> str:
    return client.get(reverse("admin:flags_flag_change", args=[flag.pk])).content.decode()


def test_the_tabs_link_a_publisher_to_restore_and_kill_confirmations(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)  # version 2
    factories.configure(checkout, "staging", enabled=True)  # version 2
    login(client, project, "publisher")
    production = factories.config(checkout, "production")
    staging = factories.config(checkout, "staging")

    page = flag_page(client, checkout)
    kill = reverse("admin:flags_rollout_confirm_kill", args=[production.pk])
    restore = reverse("admin:flags_rollout_confirm_restore", args=[production.pk, 1])
    assert f'href="{kill}"' in page and f'href="{restore}"' in page
    # Not protected: no confirmation page; the History tab sends to the versions page.
    assert reverse("admin:flags_rollout_confirm_kill", args=[staging.pk]) not in page
    assert reverse("admin:flags_rollout_confirm_restore", args=[staging.pk, 1]) not in page
    assert reverse("admin:flags_rollout_versions", args=[staging.pk]) in page
    assert "Kill switch" in text_of(client.get(kill))
    assert "Restore version 1" in text_of(client.get(restore))


def test_the_tabs_offer_no_kill_switch_when_off_or_to_an_editor(client, project, checkout):
    production = factories.config(checkout, "production")
    kill = reverse("admin:flags_rollout_confirm_kill", args=[production.pk])
    login(client, project, "publisher")
    assert kill not in flag_page(client, checkout), "already off"
    factories.configure(checkout, "production", enabled=True)
    client.logout()
    login(client, project, "editor")
    page = flag_page(client, checkout)
    assert kill not in page
    assert reverse("admin:flags_rollout_confirm_restore", args=[production.pk, 1]) not in page


def test_the_history_tab_proposes_a_restore_where_approval_is_required(client, project, checkout):
    factories.configure(checkout, "production", enabled=True)
    project.require_approval = True
    project.save()
    login(client, project, "editor")
    production = factories.config(checkout, "production")
    page = html.unescape(flag_page(client, checkout))
    restore = reverse("admin:flags_rollout_confirm_restore", args=[production.pk, 1])
    assert f'href="{restore}" title="Propose restoring version 1 in Production"' in page
